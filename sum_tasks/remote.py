"""Running commands on a host: as root, as another user, with uploaded files; and choosing the hosts."""

from __future__ import annotations

import getpass
import io
import shlex
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from fabric import Connection
from invoke import Context
from invoke.exceptions import Exit
from invoke.runners import Result

from .config import Site, load_site

q = shlex.quote
T = TypeVar("T")
LOCAL_NAMES = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}


def host_label(c: Connection) -> str:
    """user@host as the operator named the host (an ssh config alias stays an alias)."""
    return f"{c.user}@{getattr(c, 'original_host', None) or c.host}"


def run(c: Connection, script: str, *, root: bool = False, user: str | None = None, warn: bool = False, timeout: float | None = None) -> Result:
    """Run a shell script on `c`, as root (`root=True`) or as `user` (from root), output hidden.

    The script is always passed as one quoted argument to ``sh -c``, so ``cd``, pipes and
    redirections behave the same whichever user runs it.
    """
    command = f"sh -c {q(script)}"
    if user:
        command = f"runuser -u {q(user)} -- {command}"
        root = True
    if root and c.user != "root":
        return c.sudo(command, hide=True, warn=warn, timeout=timeout)
    return c.run(command, hide=True, warn=warn, timeout=timeout)


def upload(c: Connection, files: dict[str, bytes]) -> str:
    """Put `files` into a fresh 0700 directory on the host; returns its path (remove it with `cleanup`)."""
    tmp = c.run("mktemp -d /tmp/sum-tasks.XXXXXXXX", hide=True).stdout.strip()
    for name, content in files.items():
        c.put(io.BytesIO(content), f"{tmp}/{name}")
    return tmp


def cleanup(c: Connection, path: str) -> None:
    c.run(f"rm -rf {q(path)}", hide=True, warn=True)


def parse_sections(text: str) -> dict[str, str]:
    """Output of a script that prints ``@@name`` before each part, as {name: part}."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines(keepends=True):
        if line.startswith("@@"):
            current = line[2:].strip()
            sections[current] = []
        elif current:
            sections[current].append(line)
    return {k: "".join(v) for k, v in sections.items()}


def who() -> str:
    """The operator, as user@machine, for records and lock holders."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


def is_local(host: str) -> bool:
    """True when `host` names the machine running fab."""
    host = host.strip("[]")
    if host in LOCAL_NAMES or host.startswith("127."):
        return True
    try:
        return host in (socket.gethostname(), socket.getfqdn())
    except OSError:
        return False


def targets(c: Context, role: str = "deploy", destructive: bool = False) -> Iterator[tuple[Connection, Site]]:
    """The connections a task acts on, after validating the config.

    With ``-H`` fab hands the task a Connection, used as given. Without it the task gets a
    local Context: the hosts then come from ``sum.hosts``, connecting as ``sum.admin_user``
    (role ``admin``) or ``sum.deploy_user`` unless a host names its user. A task never runs
    on the local machine: with no host at all it stops before doing anything.
    """
    site = load_site(c.config.get("sum", {}))
    if isinstance(c, Connection):
        connections = [c]
    else:
        if not site.hosts:
            raise Exit("no target host: pass -H user@host or set sum.hosts in fabric.yaml (nothing runs on this machine)", code=2)
        user = site.admin_user if role == "admin" else site.deploy_user
        connections = [Connection(h, user=None if "@" in h else user, config=c.config) for h in site.hosts]
    if destructive:
        for conn in connections:
            if is_local(conn.host):
                raise Exit(f"refusing a destructive task against this machine ({conn.host}): name the server with -H or sum.hosts", code=2)
    for conn in connections:
        yield conn, site


def no_delay(c: Connection) -> Connection:
    """Open `c` with Nagle's algorithm off: each short command then costs one round trip, not ~40 ms more."""
    try:
        c.open()
    except Exception as err:  # noqa: BLE001 (socket, DNS and SSH errors all mean the same to the operator)
        raise Exit(f"cannot connect to {host_label(c)}: {type(err).__name__}: {err}. Check the host, the user and the key.", code=1) from None
    sock = c.client.get_transport().sock
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return c


def run_with_input(c: Connection, command: str, data: bytes, timeout: float = 600.0) -> tuple[int, str, str]:
    """Run `command` with `data` as its stdin over one channel: (exit status, stdout, stderr).

    Sending a file this way costs one command, where SFTP opens a session first; invoke's own
    stdin feeding would send 1000 bytes per 10 ms.
    """
    channel = no_delay(c).client.get_transport().open_session()
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
        return channel.recv_exit_status(), stdout, stderr
    finally:
        channel.close()


def one_by_one(c: Context, role: str, action: Callable[[Connection, Site], str], what: str) -> None:
    """Run `action` on each target in turn, stopping at the first failure.

    With several hosts, ends with one line per host saying where each one is: the hosts done keep
    the new state, the failed one and the ones after it keep the old.
    """
    pairs = list(targets(c, role))
    done: list[str] = []
    try:
        for conn, site in pairs:
            done.append(f"{host_label(conn)}: {action(conn, site)}")
    finally:
        if len(pairs) > 1:
            lines = done[:]
            rest = [host_label(conn) for conn, _ in pairs[len(done):]]
            if rest:
                lines.append(f"{rest[0]}: FAILED, still on its previous release")
                lines += [f"{label}: not started, still on its previous release" for label in rest[1:]]
            print(f"{what} on {len(pairs)} hosts, one by one:\n" + "\n".join(f"  {line}" for line in lines), flush=True)


def on_hosts(work: Callable[[Connection, Site, io.StringIO | None], T], pairs: list[tuple[Connection, Site]],
              parallel: bool) -> dict[str, T]:
    """`work` on each host, one after the other, or (`parallel`) all at once in threads, one Connection each.

    In parallel, `work` gets a buffer for its output, printed as one block when that host is done.
    """
    if not (parallel and len(pairs) > 1):
        return {host_label(conn): work(conn, site, None) for conn, site in pairs}

    def one(pair: tuple[Connection, Site]) -> tuple[str, T, str]:
        buffer = io.StringIO()
        result = work(pair[0], pair[1], buffer)
        return host_label(pair[0]), result, buffer.getvalue()

    results = {}
    with ThreadPoolExecutor(max_workers=len(pairs)) as pool:
        for label, result, text in pool.map(one, pairs):
            print(text, end="", flush=True)
            results[label] = result
    return results
