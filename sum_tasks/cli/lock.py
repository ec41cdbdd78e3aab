"""The site lock, held by this task's own SSH session (see ``commands/lock.py``), and `fab unlock`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fabric import Connection
from invoke import Context, task
from invoke.exceptions import Exit

from ..commands import lock
from ..configuration import Site
from ..host.runner import held, host_label, run
from ..host.targets import targets, who


@contextmanager
def site_lock(c: Connection, site: Site, action: str, then: str = "", timeout: float = 60.0) -> Iterator[str]:
    """Hold the site's lock while the block runs, or refuse, naming who holds it.

    `then` is shell run once the lock is held, in the same round trip; the block gets its output.
    """
    with held(c, lock.hold_script(site, lock.holder_text(action, who()), then), lock.HELD, timeout) as got:
        if got.exited == lock.BUSY:
            raise locked(c, site, read_holder(c, site))
        if got.exited is not None:
            raise Exit(f"could not take the lock for {site.site_slug} on {c.host} (exit status {got.exited}): "
                       f"is {site.paths.root} provisioned?", code=3)
        yield got.output.split("LOCKED\n", 1)[1]


def locked(c: Connection, site: Site, holder: str) -> Exit:
    """The refusal of a task that found the site locked by `holder`."""
    return Exit(f"site {site.site_slug} on {c.host} is locked: {holder or 'another task'}. "
                "Wait for it to finish; if it is stuck, `fab unlock` ends it.", code=3)


def read_holder(c: Connection, site: Site) -> str:
    """Who holds the lock now, or an empty string."""
    return run(c, lock.holder_script(site), check=False).stdout.strip()


def unlock_site(c: Connection, site: Site) -> str:
    """Free the site's lock by ending the session process holding it; returns what held it, or an empty string.

    The holding task itself (on another operator's machine) is not stopped: use this only when it is
    gone but its SSH session lingers (a dropped network that has not timed out yet).
    """
    holder = read_holder(c, site)
    pid = lock.holder_pid(holder)
    if pid is None:
        return ""
    if not run(c, lock.unlock_script(site, pid), check=False).ok:
        raise Exit(f"site {site.site_slug} on {c.host} is still locked after ending pid {pid} ({holder}): look at it on the host", code=1)
    return holder


@task
def unlock(c: Context) -> None:
    """Free a lock left by a task whose SSH session lingers (a killed or interrupted task frees it by itself)."""
    for conn, site in targets(c, role="deploy"):
        holder = unlock_site(conn, site)
        print(f"[{host_label(conn)}] " + (f"ended: {holder}" if holder else "not locked"))
