"""fab rollback: back to an earlier good release, health-gated like a release, without rebuilding anything.

When the warm standby runs the target (started with the .env the host has now), it is one gated
switch; otherwise the target starts on a free colour first.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from fabric import Connection
from invoke import Context, task

from ..commands import colours as plan
from ..commands import releases
from ..commands.state import parse_state, state_script
from ..configuration import Site
from ..host.output import Report, StepError
from ..host.runner import host_label
from ..host.targets import one_by_one, who
from . import colours
from .hooks import run_hooks
from .lock import site_lock
from .release import manage, record_and_prune, smoke_checks


def do_rollback(c: Connection, site: Site, to: str, force: bool) -> dict:
    report = Report("rollback" + (f" --to {to}" if to else ""), host_label(c))
    began = time.monotonic()
    with site_lock(c, site, "rollback", then=state_script(site, releases.migrations_script(site)).text) as out:
        with report.step("state") as step:
            done, state = colours.clean_up(c, site, parse_state(out))
            for note in done:
                step.changed(note)
            live = state.current
            target = releases.rollback_target(state.records, state.dirs, live, to)
            step.note(f"{live or 'nothing'} -> {target}")
        target_dir = site.paths.release(target)
        record = state.record(target)
        entry = {**{k: record.get(k) for k in ("ref", "sha", "venv")}, "id": target, "who": who(), "rollback": True,
                 "at": datetime.now(UTC).isoformat(timespec="seconds"), "backup": ""}
        with report.step("database migrations") as step:
            known = releases.last_fingerprint(state.records, target)
            if known and state.migrations == known:
                ahead = []
                step.note(f"the same migrations are applied as when {target} was last live")
            else:
                status, output = manage(c, site, target_dir, "ahead")
                if status != 0:
                    raise StepError("could not read the applied migrations\n" + output[-1500:])
                ahead = [line[6:] for line in output.splitlines() if line.startswith("AHEAD ")]
            if ahead:
                backup = releases.backup_undoing(state.records, target)
                message = (f"the database has {len(ahead)} migrations {target} does not know: {', '.join(ahead)}"
                           + (f"; the backup taken before them is {backup}" if backup else ""))
                if not force:
                    raise StepError(message, "roll back anyway with --force, or restore that backup with db.restore")
                step.warn(message)
        old, standby = plan.live_colour(state), plan.standby_colour(state)
        colour, started, switched = standby, False, False
        if not ahead:
            entry["migrations"] = state.migrations
        try:
            run_hooks(c, site, report, "before_switch", target_dir, entry)
            if plan.warm_standby(state, target):
                with report.step(f"switch to {standby} (warm standby) once /health/ answers 200") as step:
                    gated = plan.switch_script(site, target_dir, standby, gate=True, migrations=False)
                    switched = colours.switch(c, site, report, gated) is not None
                    if switched:
                        step.changed(plan.switched_text(standby, old, ""))
                    else:
                        step.warn(f"{standby} did not answer /health/ with 200 within {plan.STANDBY_TIMEOUT}s: starting {target} afresh")
            if not switched:
                colour = plan.free_colour(state)
                with report.step(f"start {colour} and wait for /health/"):
                    started = True
                    colours.start(c, site, colour, target_dir)
                with report.step("switch") as step:
                    switched = True
                    colours.switch(c, site, report, plan.switch_script(site, target_dir, colour, standby, migrations=False))
                    step.changed(plan.switched_text(colour, old, standby))
        except BaseException:
            if started and not switched:
                colours.stop(c, site, colour)
            if not switched:
                run_hooks(c, site, report, "after_failure", target_dir, {**entry, "step": report.steps[-1].name})
            raise
        entry.update(result="good", seconds=round(time.monotonic() - began, 2), colour=colour)
        with report.step("record and prune"):
            record_and_prune(c, site, state, entry)
        run_hooks(c, site, report, "after_switch", target_dir, entry)
    smoke_checks(c, site, report, str(entry.get("sha") or ""))
    report.summary(f"{target} live")
    return entry


@task(help={"to": "release id, ref or commit to go back to (default: the previous good release)",
            "force": "roll back even when the database has migrations the target does not know"})
def rollback(c: Context, to: str = "", force: bool = False) -> None:
    """Switch back to an earlier good release, health-gated like a release, without rebuilding anything."""
    if to:
        releases.validate_ref(to)
    one_by_one(c, "deploy", lambda conn, site: f"{do_rollback(conn, site, to, force)['id']} live", "rollback")
