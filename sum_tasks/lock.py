"""One lock per site, held by a live SSH session: it dies with the process that took it.

`flock` on the host holds the lock for as long as the session's stdin stays open. Ctrl-C,
``kill -9`` or a dropped connection closes the session, so the lock frees itself; the info
file says who holds it and since when, and `unlock` ends a holder that is stuck.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from fabric import Connection
from invoke.exceptions import Exit

from .config import Site
from .remote import no_delay, q, run, who

BUSY = 75
DONE = "@@@locked"


def lock_paths(site: Site) -> tuple[str, str]:
    return f"{site.root}/.lock", f"{site.root}/.lock.info"


def holder_text(action: str) -> str:
    since = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return f"{action} by {who()} since {since}"


@contextmanager
def site_lock(c: Connection, site: Site, action: str, then: str = "", timeout: float = 60.0) -> Iterator[str]:
    """Hold the site's lock while the block runs, or refuse, naming who holds it.

    `then` is shell run once the lock is held, in the same round trip; the block gets its output.
    The holder removes its info file itself when the session ends, so letting go costs no round trip.
    """
    lock, info = lock_paths(site)
    holder = holder_text(action)
    # -o: only flock itself holds the lock's file, so ending this sh (see `unlock`) frees it.
    holding = (f'printf "%s (pid %s)\\n" "$1" "$$" > {q(info)}.tmp && mv {q(info)}.tmp {q(info)} || exit 1; echo LOCKED; '
               f"( {then or ':'} ) </dev/null 2>/dev/null; echo {DONE}; cat >/dev/null; rm -f {q(info)}")
    script = f"exec flock -o -n -E {BUSY} {q(lock)} sh -c {q(holding)} sh {q(holder)}"
    channel = no_delay(c).client.get_transport().open_session()
    channel.exec_command(script)
    channel.settimeout(timeout)
    output = b""
    while f"\n{DONE}\n".encode() not in b"\n" + output:
        try:
            chunk = channel.recv(65536)
        except TimeoutError:
            channel.close()
            raise Exit(f"timed out taking the lock for {site.site_slug} on {c.host}", code=3) from None
        output += chunk
        if not chunk:
            status = channel.recv_exit_status()
            channel.close()
            if status == BUSY:
                held = run(c, f"cat {q(info)} 2>/dev/null", warn=True).stdout.strip() or "another task"
                raise Exit(
                    f"site {site.site_slug} on {c.host} is locked: {held}. "
                    "Wait for it to finish; if it is stuck, `fab unlock` ends it.",
                    code=3,
                )
            raise Exit(f"could not take the lock for {site.site_slug} on {c.host} (exit status {status}): is {site.root} provisioned?", code=3)
    try:
        yield output.decode(errors="replace").split("LOCKED\n", 1)[1].rsplit(f"{DONE}\n", 1)[0]
    finally:
        channel.shutdown_write()
        channel.close()


def read_holder(c: Connection, site: Site) -> str:
    """Who holds the lock now, or an empty string."""
    lock, info = lock_paths(site)
    script = f"[ -e {q(lock)} ] && ! flock -n {q(lock)} true && cat {q(info)} 2>/dev/null"
    return run(c, script, warn=True).stdout.strip()


def unlock(c: Connection, site: Site) -> str:
    """Free the site's lock by ending the session process holding it; returns what held it, or an empty string.

    The holding task itself (on another operator's machine) is not stopped: use this only when it is
    gone but its SSH session lingers (a dropped network that has not timed out yet).
    Raises `Exit` when the lock is still held afterwards.
    """
    held = read_holder(c, site)
    if not held or "(pid " not in held:
        return ""
    pid = held.rsplit("(pid ", 1)[1].rstrip(")")
    if not pid.isdigit():
        return ""
    lock, _ = lock_paths(site)
    freed = run(c, f"pkill -P {pid} 2>/dev/null; kill {pid} 2>/dev/null; "
                   f"for i in $(seq 50); do flock -n {q(lock)} true && exit 0; sleep 0.1; done; exit 1", warn=True)
    if not freed.ok:
        raise Exit(f"site {site.site_slug} on {c.host} is still locked after ending pid {pid} ({held}): look at it on the host", code=1)
    return held

