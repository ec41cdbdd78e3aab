"""Which hosts a task acts on, as which user; and running a task over several hosts."""

from __future__ import annotations

import getpass
import io
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from fabric import Connection
from invoke import Context
from invoke.exceptions import Exit

from ..configuration import Site, load_site
from .runner import host_label
from .trust import trust

T = TypeVar("T")
LOCAL_NAMES = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}


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
    if role == "deploy":
        for conn in connections:
            if conn.user == "root":
                raise Exit(f"refusing to run as root on {host_label(conn)}: connect as the deploy user ({site.deploy_user}@...), "
                           "so nothing root-owned lands in the site's files (only provision and check run as root)", code=2)
    for conn in connections:
        yield trust(conn), site


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


def project_dir(c: Context) -> str:
    """The client repo's directory (where fabric.yaml is); '' when there is none."""
    return getattr(c.config, "_project_prefix", None) or ""
