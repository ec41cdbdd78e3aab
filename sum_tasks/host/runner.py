"""The one way a task runs something on a host: `run` a `Script`, with one failure policy.

A script runs as the connecting user, as root (``as_="root"``: sudo when not connected as root)
or as another user (``as_=NAME``: ``runuser`` from root). A failure raises `RemoteError`, which
names the script and shows the last `TAIL` lines of its output, the same everywhere. Three modes
share it: plain (`run`), with bytes on stdin (``stdin=``), and `stream` (output copied here as it
comes); `held` keeps a script running while a block runs (the site lock).
"""

from __future__ import annotations

import codecs
import contextvars
import select
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import paramiko
from fabric import Connection
from invoke.exceptions import Exit

from ..commands.script import Result, Script, q
from .output import StepError
from .trust import UnknownHostKey

TAIL = 15
# The user scripts run as when a call names none (`acting_as`).
_acting_as: contextvars.ContextVar[str] = contextvars.ContextVar("acting_as", default="")


@contextmanager
def acting_as(user: str) -> Iterator[None]:
    """Run every script in the block as `user` unless it names another: provision (connected as root) restarting the
    app does what a deploy task does, as the deploy user, so nothing root-owned lands in the site."""
    token = _acting_as.set(user)
    try:
        yield
    finally:
        _acting_as.reset(token)


def tail(text: str, lines: int = TAIL) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


class RemoteError(StepError):
    """A script failed on the host: which one, its exit status, the last lines it printed."""

    def __init__(self, script: Script, result: Result, hint: str = "") -> None:
        output = tail(result.stdout + "\n" + result.stderr)
        super().__init__(f"{script.name} failed (exit status {result.exited})" + (f"\n{output}" if output else ""), hint)
        self.result = result


def host_label(c: Connection) -> str:
    """user@host as the operator named the host (an ssh config alias stays an alias)."""
    return f"{c.user}@{getattr(c, 'original_host', None) or c.host}"


def connect(c: Connection) -> Connection:
    """Open `c` with Nagle's algorithm off: each short command then costs one round trip, not ~40 ms more."""
    if c.is_connected:
        return c
    try:
        c.open()
    except paramiko.BadHostKeyException as err:
        raise Exit(f"refusing {host_label(c)}: its SSH host key has CHANGED (it offers {err.key.get_name()} {err.key.fingerprint}, "
                   f"known_hosts has {err.expected_key.fingerprint}). Someone may be in the middle; if the host was rebuilt, "
                   "check the new key against the provider's console and replace the old line in known_hosts.", code=1) from None
    except UnknownHostKey as err:
        raise Exit(f"refusing {host_label(c)}: {err}", code=1) from None
    except Exception as err:  # noqa: BLE001 (socket, DNS and SSH errors all mean the same to the operator)
        raise Exit(f"cannot connect to {host_label(c)}: {type(err).__name__}: {err}. Check the host, the user and the key.", code=1) from None
    sock = c.client.get_transport().sock
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return c


def command_line(c: Connection, script: Script, as_: str = "", sudo_prompt: bool = True) -> tuple[str, bool]:
    """The command for `script` run as `as_`, and whether it goes through Fabric's sudo (which answers a password prompt)."""
    command = script.command()
    as_ = as_ or _acting_as.get()
    if as_ and as_ != "root" and as_ != c.user:
        command = f"runuser -u {q(as_)} -- {command}"
        as_ = "root"
    if as_ == "root" and c.user != "root":
        if sudo_prompt:
            return command, True
        return f"sudo -n {command}", False
    return command, False


def run(c: Connection, script: Script, *, as_: str = "", stdin: bytes | None = None, timeout: float | None = None,
        check: bool = True, hint: str = "") -> Result:
    """Run `script` on `c` as `as_`, its output hidden; a non-zero exit raises `RemoteError` unless `check` is false."""
    connect(c)
    if stdin is None:
        command, through_sudo = command_line(c, script, as_)
        runner = c.sudo if through_sudo else c.run
        got = runner(command, hide=True, warn=True, timeout=timeout, in_stream=False)
        result = Result(got.exited, got.stdout, got.stderr)
    else:
        result = _with_input(c, command_line(c, script, as_, sudo_prompt=False)[0], stdin, timeout or 600.0)
    if check and not result.ok:
        raise RemoteError(script, result, hint)
    return result


def _with_input(c: Connection, command: str, data: bytes, timeout: float) -> Result:
    """One channel, `data` on stdin: a file sent this way costs one command (SFTP opens a session first)."""
    channel = c.client.get_transport().open_session()
    try:
        channel.settimeout(timeout)
        channel.exec_command(command)
        try:
            channel.sendall(data)
        except OSError:
            pass  # the command ended before reading it all: its stderr and exit status say why
        channel.shutdown_write()
        stdout = channel.makefile("rb").read().decode(errors="replace")
        stderr = channel.makefile_stderr("rb").read().decode(errors="replace")
        return Result(channel.recv_exit_status(), stdout, stderr)
    finally:
        channel.close()


def interactive(c: Connection, script: Script) -> int:
    """Run `script` with this terminal (a pty when stdin is one) or this stdin (a pipe) and its output shown; its exit status."""
    connect(c)
    tty = sys.stdin.isatty()
    got = c.run(command_line(c, script, sudo_prompt=False)[0], pty=tty, in_stream=sys.stdin, warn=True, hide=False)
    return got.exited


def stream(c: Connection, script: Script) -> int | None:
    """Run `script`, copying its output here as it comes; its exit status, or None when Ctrl-C ended it."""
    connect(c)
    channel = c.client.get_transport().open_session()
    decoders = [codecs.getincrementaldecoder("utf-8")(errors="replace") for _ in range(2)]
    try:
        channel.exec_command(script.command())
        while True:
            if channel.recv_ready():
                sys.stdout.write(decoders[0].decode(channel.recv(65536)))
                sys.stdout.flush()
            elif channel.recv_stderr_ready():
                sys.stderr.write(decoders[1].decode(channel.recv_stderr(65536)))
            elif channel.exit_status_ready():
                return channel.recv_exit_status()
            else:
                select.select([channel], [], [], 0.5)
    except KeyboardInterrupt:
        return None
    finally:
        channel.close()


@dataclass
class Held:
    """What `held` got: the output up to the marker, or the exit status when the script ended first."""

    output: str = ""
    exited: int | None = None


@contextmanager
def held(c: Connection, script: Script, marker: str, timeout: float = 60.0) -> Iterator[Held]:
    """Start `script` and keep it running (its stdin open) while the block runs; the block gets its output up to `marker`.

    When the script ends before printing `marker`, the block gets its exit status instead. Leaving
    the block closes stdin and the channel, which is what lets the script go.
    """
    connect(c)
    channel = c.client.get_transport().open_session()
    channel.settimeout(timeout)
    channel.exec_command(command_line(c, script, sudo_prompt=False)[0])
    output = b""
    line = f"\n{marker}\n".encode()
    got = Held()
    try:
        while line not in b"\n" + output:
            try:
                chunk = channel.recv(65536)
            except TimeoutError:
                raise Exit(f"{script.name}: no answer from {host_label(c)} within {timeout:g}s", code=3) from None
            output += chunk
            if not chunk:
                got.exited = channel.recv_exit_status()
                break
        got.output = output.decode(errors="replace").rsplit(f"{marker}\n", 1)[0]
        yield got
    finally:
        try:
            channel.shutdown_write()
        finally:
            channel.close()
