"""Named points in release, rollback and restore where a client repo runs its own commands or Python.

In fabric.yaml (shell commands, run on the host as the deploy user, in the release's directory,
with the site's .env and the release's GIT_SHA in the environment)::

    sum:
      hooks:
        before_migrate: ["./manage.py check --deploy"]

In the fabfile (Python, run on the operator's machine)::

    from sum_tasks import hooks

    @hooks.on("after_switch")
    def tell_the_team(c, site, info): ...

A failing ``before_*`` hook fails the release like any other step; ``after_*`` hooks only warn.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fabric import Connection

from ..commands.envfile import hook_script
from ..configuration import HOOK_POINTS, Site
from ..host.output import Report, StepError
from ..host.runner import run, tail

Hook = Callable[[Connection, Site, dict[str, Any]], None]
_registered: dict[str, list[Hook]] = {point: [] for point in HOOK_POINTS}


def on(point: str) -> Callable[[Hook], Hook]:
    """Register ``fn(c, site, info)`` to run at `point` (one of `HOOK_POINTS`)."""
    if point not in _registered:
        raise ValueError(f"unknown hook point {point!r}; one of {', '.join(HOOK_POINTS)}")

    def register(fn: Hook) -> Hook:
        _registered[point].append(fn)
        return fn

    return register


def registered(point: str) -> list[Hook]:
    return list(_registered[point])


def run_hooks(c: Connection, site: Site, report: Report, point: str, directory: str, info: dict[str, Any]) -> None:
    """Run the commands configured for `point`, then the registered callables, as one step."""
    commands, callables = site.hooks.get(point, ()), registered(point)
    if not commands and not callables:
        return
    fatal = point.startswith("before_")
    with report.step(f"hook {point}") as step:
        for command in commands:
            result = run(c, hook_script(site, directory, point, command), check=False)
            if not result.ok:
                message = f"hook {point} command failed (exit status {result.exited}): {command}\n{tail(result.stdout + result.stderr)}"
                if fatal:
                    raise StepError(message, "fix the hook or the code it checks, then release again")
                step.warn(message)
            else:
                step.note(f"ran: {command}")
        for fn in callables:
            try:
                fn(c, site, info)
            except Exception as err:
                if fatal:
                    raise StepError(f"hook {point} {fn.__name__} raised {type(err).__name__}: {err}") from err
                step.warn(f"hook {point} {fn.__name__} raised {type(err).__name__}: {err}")
            else:
                step.note(f"ran: {fn.__name__}")
