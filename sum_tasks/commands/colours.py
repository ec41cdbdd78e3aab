"""The gunicorn colours: which is live, the warm standby, free or stale (decided from a `ReleaseState`), and the
scripts that start, stop, switch and clean them up.

Between tasks two colours run: the live one (the one ``live.sock`` names) and the standby, on the release
that was live before. A release starts the third; the switch renames ``current`` and ``live.sock`` in one
command, so new connections go to the new colour while the old one finishes what it has.
"""

from __future__ import annotations

import dataclasses

from ..configuration import COLOURS, Site, systemctl
from .health import wait_script
from .releases import good_releases, migrations_script
from .script import Script, q
from .state import ReleaseState

STANDBY_TIMEOUT = 3  # seconds a warm standby gets to answer /health/ before rollback starts the release afresh
UNHEALTHY = 9

# ---------------------------------------------------------------- decisions (pure)


def live_colour(state: ReleaseState) -> str:
    """The colour running the live release: the one `live.sock` names, else any that runs it (older layouts)."""
    running = [c for c in COLOURS if state.current and state.colours[c] == state.current]
    return state.live if state.live in running else next(iter(running), "")


def standby_colour(state: ReleaseState) -> str:
    """The colour kept running, not live, on an earlier good release: the one most recently live if there are several."""
    live = live_colour(state)
    order = good_releases(state.records, state.dirs - set(state.building))
    kept = [c for c in COLOURS if c != live and state.colours[c] in order and state.colours[c] != state.current]
    return max(kept, key=lambda c: order.index(state.colours[c]), default="")


def free_colour(state: ReleaseState) -> str:
    """The colour a release (or a rollback with no warm standby) starts: neither live nor the standby, a stopped one first."""
    free = [c for c in COLOURS if c not in (live_colour(state), standby_colour(state))]
    return next((c for c in free if not state.active[c]), free[0])


def warm_standby(state: ReleaseState, release_id: str) -> bool:
    """Whether the standby runs `release_id`, started with the .env the host has now."""
    colour = standby_colour(state)
    return (bool(colour) and state.colours[colour] == release_id and state.active[colour]
            and bool(state.env) and state.env_stamps[colour] == state.env)


def stale_colours(state: ReleaseState) -> list[str]:
    """Colours linked or running that are neither live nor the standby: what a killed task left."""
    keep = (live_colour(state), standby_colour(state))
    return [c for c in COLOURS if c not in keep and (state.colours[c] or state.active[c])]


def outdated(site: Site, output: str) -> list[str]:
    """The running app units (from `identities_script`) that must restart to run as provision left them: a process
    not of the app's own user (started before the site had one), or started before its unit file or .env last changed."""
    rows = [line.split() for line in output.splitlines()]
    changed = next((int(row[1]) for row in rows if len(row) == 2 and row[0] == "@files" and row[1].isdigit()), 0)
    return [row[0] for row in rows if len(row) == 3 and (row[1] != site.paths.app_user or not row[2].isdigit() or int(row[2]) < changed)]


def switched_text(colour: str, old: str, retire: str) -> str:
    return f"{colour} live" + (f", {old} kept as the warm standby" if old else "") + (f", {retire} stopping" if retire else "")


# ---------------------------------------------------------------- scripts


def relink(link: str, target: str) -> str:
    """Shell that points the symlink `link` at `target` with one rename."""
    return f"ln -sfn {q(target)} {q(link)}.tmp && mv -T {q(link)}.tmp {q(link)}"


def unlink_colour(site: Site, colour: str) -> str:
    """Shell removing `colour`'s release link (so nothing starts it again) and its .env hash."""
    return f"rm -f {q(site.paths.colour(colour).link)} {q(site.paths.colour(colour).env_stamp)}"


def retire_script(site: Site, colour: str) -> str:
    """Shell that stops `colour` in the background and unlinks it."""
    return f"{systemctl('--no-block stop', site.paths.colour(colour).unit)} && {unlink_colour(site, colour)}"


def clean_up(site: Site, state: ReleaseState) -> tuple[Script | None, list[str], ReleaseState]:
    """Undo what a killed task left: a colour that runs no good release, `live.sock` astray, half-built dirs.

    Returns the script doing it (None when nothing is to do), what it does, and the state afterwards.
    Raises ValueError when the site was released by a version without `live.sock`.
    """
    paths, done, script = site.paths, [], []
    live = live_colour(state)
    for colour in stale_colours(state):
        if state.active[colour]:
            script.append(f"{systemctl('stop', paths.colour(colour).unit)} || exit 1")
            done.append(f"stopped stale {colour}")
        if state.colours[colour]:
            script.append(unlink_colour(site, colour))
    if state.current and not state.live:
        raise ValueError(f"{paths.live_socket} is missing: this site was released by an older sum_tasks, whose Caddy "
                         "config proxies to the colours directly")
    if live and state.live != live:
        script.append(relink(paths.live_socket, paths.colour(live).socket))
        done.append(f"pointed live.sock at {live}")
        state = dataclasses.replace(state, live=live)
    for name in state.building:
        script.append(f"rm -rf {q(paths.release(name))}")
        done.append(f"removed half-built {name}")
    state = dataclasses.replace(state, dirs=state.dirs - set(state.building))
    return (Script("clean up after an interrupted release", "\n".join(script)) if script else None), done, state


def start_script(site: Site, colour: str, release_dir: str) -> Script:
    """Point `colour` at the release, (re)start it, and wait for /health/ on its own socket (one round trip)."""
    unit = site.paths.colour(colour).unit
    return Script(f"start {colour}", (
        f"{relink(site.paths.colour(colour).link, release_dir)} && "
        f"{{ {systemctl('reset-failed', unit)} 2>/dev/null; {systemctl('restart', unit)}; }} && "
        + wait_script(site, site.paths.colour(colour).socket, site.health_timeout)
    ))


def stop_script(site: Site, colour: str) -> Script:
    unit = site.paths.colour(colour).unit
    return Script(f"stop {colour}", f"{systemctl('stop', unit)}; {systemctl('reset-failed', unit)}; {unlink_colour(site, colour)}")


def journal_script(site: Site, colour: str, lines: int = 15) -> Script:
    return Script(f"journal of {colour}", f"journalctl -u {q(site.paths.colour(colour).unit)} -n {lines} --no-pager -o cat")


def switch_script(site: Site, release_dir: str, colour: str, retire: str = "", gate: bool = False, migrations: bool = True) -> Script:
    """Make the release current and send new connections to `colour` (two renames in one command).

    Prints ``@@switched`` once both renames are done, then ``@@migrations`` and (with `migrations`) the
    fingerprint of the applied migrations. With `gate`, only once `colour` answers /health/ with 200
    within `STANDBY_TIMEOUT` seconds; it exits `UNHEALTHY`, changing nothing, if it does not. Afterwards
    `retire` stops and celery (and beat) restart in the background: a long task never holds the switch.
    """
    paths = site.paths
    after = [retire_script(site, retire)] if retire else []
    after += [systemctl("--no-block restart", unit) for unit in paths.celery_units()]
    text = (f"rm -f {q(release_dir)}/.building && {relink(paths.current, release_dir)} && "
            f"{relink(paths.live_socket, paths.colour(colour).socket)} && echo @@switched && "
            + "".join(f"{command} && " for command in after) + "echo @@migrations"
            + (f"; {migrations_script(site)}" if migrations else ""))
    if gate:
        text = (wait_script(site, paths.colour(colour).socket, STANDBY_TIMEOUT)
                + f'; [ "$(printf %s "$out" | tail -n 1)" = 200 ] || exit {UNHEALTHY}; ' + text)
    return Script(f"switch to {colour}", text)


def restart_script(site: Site, old: str) -> Script:
    """After `env.restart` switched: stop the colour that served, a second later (a request may still wait in its queue)."""
    return Script(f"stop {old}", f"sleep 1 && {retire_script(site, old)}")


def celery_restart_script(site: Site) -> Script:
    return Script("restart celery", " && ".join(systemctl("--no-block restart", unit) for unit in site.paths.celery_units()))


def identities_script(site: Site) -> Script:
    """``<unit> <user> <started>`` for each active app unit (one stopping is left out: who its main process runs as, since when, in epoch
    seconds), then ``@files <epoch>``: when the unit files or .env last changed (`outdated` reads it)."""
    paths = site.paths
    units = " ".join(q(u) for u in paths.app_units())
    files = " ".join(q(f) for f in (paths.unit_file(paths.gunicorn_template), paths.unit_file(paths.celery),
                                    paths.unit_file(paths.celery_beat), paths.env))
    return Script("read who runs the app", (
        f"for u in {units}; do pid=$(systemctl show -p MainPID --value \"$u\"); "
        'if [ "${pid:-0}" != 0 ] && [ "$(systemctl is-active "$u")" = active ]; then '
        'echo "$u $(stat -c %U "/proc/$pid") $(date -d "$(systemctl show -p ExecMainStartTimestamp --value "$u")" +%s)"; fi; done; '
        f"echo \"@files $(stat -c %Y {files} 2>/dev/null | sort -n | tail -1)\""
    ))


def live_socket_script(site: Site) -> Script:
    """Prints what `live.sock` points at (`health.socket_colour` reads the colour)."""
    return Script("read live.sock", f"readlink {q(site.paths.live_socket)}")

