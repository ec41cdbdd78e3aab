"""SSH trust the OpenSSH way: host keys checked against the ssh config's known_hosts files, no agent forwarding.

Fabric on its own accepts any host key and honours ``ForwardAgent`` from ``~/.ssh/config``. Every
connection a task makes goes through `trust` first:

- keys come from ``UserKnownHostsFile`` (default ``~/.ssh/known_hosts ~/.ssh/known_hosts2``) and
  ``GlobalKnownHostsFile`` (default ``/etc/ssh/ssh_known_hosts``) of the ssh config Fabric reads;
- ``StrictHostKeyChecking``: ``yes`` (and absent) refuses an unknown host, saying how to add its key;
  ``accept-new`` records an unknown host's key in the first known_hosts file; ``no`` accepts it
  without recording it. A key that differs from the recorded one is always refused;
- the agent is forwarded only when ``fabric.yaml`` says ``forward_agent: true``.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import paramiko
from fabric import Connection

USER_FILES = "~/.ssh/known_hosts ~/.ssh/known_hosts2"
GLOBAL_FILES = "/etc/ssh/ssh_known_hosts /etc/ssh/ssh_known_hosts2"


class UnknownHostKey(paramiko.SSHException):
    """The host's key is in no known_hosts file and StrictHostKeyChecking does not allow a new one."""


def files(value: str) -> list[Path]:
    return [Path(os.path.expanduser(p)) for p in shlex.split(value) if p.lower() != "none"]


class Refuse(paramiko.MissingHostKeyPolicy):
    """``StrictHostKeyChecking yes`` (and absent): an unknown host is refused, with how to add its key."""

    def __init__(self, known_hosts: list[Path], alias: str) -> None:
        self.known_hosts, self.alias = known_hosts, alias

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        where = self.known_hosts[0] if self.known_hosts else "~/.ssh/known_hosts"
        raise UnknownHostKey(
            f"the SSH host key of {hostname} is not known ({key.get_name()} {key.fingerprint}): check it against the key the "
            f"provider shows (its console), then add it to {where} (`ssh-keyscan {hostname.strip('[]').split(']:')[0]} >> {where}`), "
            f"or set `StrictHostKeyChecking accept-new` for {self.alias} in your ssh config to record it on first contact"
        )


def refuse_other_type(client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
    """A host known by a key of another type is not a new host: its key changed (paramiko only compares keys of one type)."""
    known = client.get_host_keys().lookup(hostname)
    if known:
        raise paramiko.BadHostKeyException(hostname, key, next(iter(known.values())))


class AcceptNew(paramiko.MissingHostKeyPolicy):
    """Record an unknown host's key by appending one line to the first known_hosts file (the rest of the file untouched)."""

    def __init__(self, known_hosts: Path | None) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        refuse_other_type(client, hostname, key)
        client.get_host_keys().add(hostname, key.get_name(), key)
        if self.known_hosts is None:
            return
        self.known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.known_hosts, "a", opener=lambda path, flags: os.open(path, flags, 0o600)) as handle:
            handle.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


class AcceptUnrecorded(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        refuse_other_type(client, hostname, key)
        client.get_host_keys().add(hostname, key.get_name(), key)


def policy(strict: str, known_hosts: list[Path], alias: str) -> paramiko.MissingHostKeyPolicy:
    """The policy for an unknown host under ``StrictHostKeyChecking`` `strict` (a changed key is refused by paramiko itself)."""
    value = strict.lower()
    if value == "accept-new":
        return AcceptNew(known_hosts[0] if known_hosts else None)
    if value in ("no", "off"):
        return AcceptUnrecorded()
    return Refuse(known_hosts, alias)


def trust(c: Connection) -> Connection:
    """Set `c` up to check host keys as OpenSSH would and not to forward the agent; before it connects."""
    config = c.ssh_config
    user_files = files(config.get("userknownhostsfile", USER_FILES))
    client = c.client
    # One set of known keys (paramiko saves nothing here: accept-new appends its own line to the user's file).
    for path in [*files(config.get("globalknownhostsfile", GLOBAL_FILES)), *user_files]:
        if path.is_file():
            client.get_host_keys().load(str(path))
    client.set_missing_host_key_policy(policy(config.get("stricthostkeychecking", ""), user_files, getattr(c, "original_host", c.host)))
    c.forward_agent = bool(c.config.get("forward_agent", False))
    return c
