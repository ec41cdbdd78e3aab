"""Running the colour scripts on a host (for release, rollback and env.restart), with the errors an operator reads."""

from __future__ import annotations

from fabric import Connection

from ..commands import colours
from ..commands.health import parse_answer
from ..commands.script import Script
from ..commands.state import MISSING, ReleaseState, parse_state, state_script
from ..configuration import Site
from ..host.output import Report, StepError
from ..host.runner import run

SERVING = "the previous release is still serving"


def read_state(c: Connection, site: Site) -> ReleaseState:
    result = run(c, state_script(site), check=False)
    if result.exited == MISSING:
        raise StepError(f"{site.paths.root} does not exist", "run `fab provision` first")
    return parse_state(result.stdout)


def clean_up(c: Connection, site: Site, state: ReleaseState) -> tuple[list[str], ReleaseState]:
    """Undo what a killed task left (see `colours.clean_up`); what was done, and the state afterwards."""
    try:
        script, done, state = colours.clean_up(site, state)
    except ValueError as err:
        raise StepError(str(err), "run `fab provision` once (it points Caddy at live.sock), then this task") from None
    if script:
        run(c, script)
    return done, state


def journal(c: Connection, site: Site, colour: str) -> str:
    return run(c, colours.journal_script(site, colour), check=False).stdout.strip()


def start(c: Connection, site: Site, colour: str, release_dir: str, serving: str = SERVING) -> None:
    """Start `colour` on the release and wait for /health/ on its own socket; `serving` says what still serves if it fails."""
    result = run(c, colours.start_script(site, colour, release_dir), check=False, timeout=site.health_timeout + 60)
    if not result.ok:
        raise StepError(f"{colour} did not start (exit status {result.exited})\n{result.stderr.strip()}\n{journal(c, site, colour)}",
                        f"{serving}; the lines above say why (the app failing to import, or sudo refusing: then run provision)")
    health = parse_answer(result.stdout)
    if not health.ok:
        body = health.body.strip()[:300]
        raise StepError(
            f"the new release did not answer /health/ with 200 within {site.health_timeout}s: {health.describe()}"
            + (f"\n{body}" if body else "") + f"\n{journal(c, site, colour)}",
            f"{serving}; fix the code and release again",
        )


def stop(c: Connection, site: Site, colour: str) -> None:
    run(c, colours.stop_script(site, colour), check=False)


def switch(c: Connection, site: Site, report: Report, script: Script) -> str | None:
    """Run a `colours.switch_script`; returns the migrations fingerprint it printed, or None when a gated switch found the colour unhealthy.

    Once `current` names the new release nothing undoes it: a failure after the renames (restarting
    celery) is a warning, never a reason to stop the colour now serving.
    """
    result = run(c, script, check=False)
    if result.exited == colours.UNHEALTHY and "@@switched" not in result.stdout:
        return None
    if "@@switched" not in result.stdout:
        raise StepError(f"could not switch current (exit status {result.exited})\n{result.stderr.strip()[-300:]}")
    if "@@migrations" not in result.stdout:
        report.steps[-1].warn(f"switched, but finishing the switch failed: {result.stderr.strip()[-300:]}; see `fab status`")
        return ""
    return result.stdout.split("@@migrations", 1)[1].strip()
