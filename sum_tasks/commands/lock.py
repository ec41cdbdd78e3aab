"""The site lock's scripts: one ``flock`` per site, held by a live SSH session, so it dies with the task that took it.

`hold_script` keeps the lock while the session's stdin stays open (Ctrl-C, ``kill -9`` or a dropped
connection closes it, and the lock frees itself); the info file says who holds it and since when;
`unlock_script` ends a holder whose session lingers.
"""

from __future__ import annotations

from datetime import UTC, datetime

from ..configuration import Site
from .script import Script, q

BUSY = 75
HELD = "@@@locked"
STILL_HELD = 1


def holder_text(action: str, who: str, now: datetime | None = None) -> str:
    since = (now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%SZ")
    return f"{action} by {who} since {since}"


def hold_script(site: Site, holder: str, then: str = "") -> Script:
    """Take the lock (or exit `BUSY`), write who holds it, run `then` and print its output, print `HELD`, hold until stdin ends.

    ``flock -o``: only flock itself holds the lock's file, so ending this sh (see `unlock_script`) frees it.
    The holder removes its info file itself when the session ends, so letting go costs no round trip.
    """
    info = q(site.paths.lock_info)
    holding = (f'printf "%s (pid %s)\\n" "$1" "$$" > {info}.tmp && mv {info}.tmp {info} || exit 1; echo LOCKED; '
               f"( {then or ':'} ) </dev/null 2>/dev/null; echo {HELD}; cat >/dev/null; rm -f {info}")
    return Script(f"take the lock for {site.site_slug}",
                  "# shellcheck disable=SC2016  # the inner sh expands them\n"
                  f"exec flock -o -n -E {BUSY} {q(site.paths.lock)} sh -c {q(holding)} sh {q(holder)}")


def holder_script(site: Site) -> Script:
    """Prints who holds the lock now; nothing when it is free."""
    lock, info = q(site.paths.lock), q(site.paths.lock_info)
    return Script("read the lock", f"[ -e {lock} ] && ! flock -n {lock} true && cat {info} 2>/dev/null")


def unlock_script(site: Site, pid: int) -> Script:
    """End the session process `pid` holding the lock (and its children); exit `STILL_HELD` if the lock stays held 5 s."""
    return Script(f"end lock holder {pid}", (
        f"pkill -P {pid} 2>/dev/null; kill {pid} 2>/dev/null; "
        f"for _ in $(seq 50); do flock -n {q(site.paths.lock)} true && exit 0; sleep 0.1; done; exit {STILL_HELD}"
    ))


def holder_pid(held: str) -> int | None:
    """The pid in a holder line (``... (pid 123)``), or None."""
    if "(pid " not in held:
        return None
    pid = held.rsplit("(pid ", 1)[1].rstrip(")")
    return int(pid) if pid.isdigit() else None
