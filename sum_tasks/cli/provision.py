"""fab provision: converge the host onto the golden path (the runbook's sections 1-8 and 13).

Reads the OS release, installs packages, reads the host's facts, then converges the plan
``operations/plan.py`` computes from them; each `Op` is one step of the output.
"""

from __future__ import annotations

from fabric import Connection
from invoke import Context, task

from ..commands import colours as plan_colours
from ..commands.facts import facts_script, os_release_script, parse_facts, parse_os_release
from ..configuration import Site
from ..host.converge import converge
from ..host.output import Report, StepError
from ..host.runner import acting_as, host_label, run
from ..host.targets import project_dir, targets
from ..operations.packages import package_ops
from ..operations.plan import host_plan, refusals
from ..operations.redis import shared_redis_ops
from . import colours
from .env import restart_app
from .lock import site_lock
from .offsite import operator_credentials, operator_password


@task(help={"check": "show what would change; change nothing"})
def provision(c: Context, check: bool = False) -> None:
    """Converge the host onto the golden path: packages, users, firewall, PostgreSQL, Redis, units, Caddy."""
    for conn, site in targets(c, role="admin", destructive=True):
        credentials = operator_credentials(site)  # a bad env file stops here, before anything connects
        report = Report("provision --check" if check else "provision", host_label(conn))
        with report.step("read os release"):
            os = parse_os_release(run(conn, os_release_script()).stdout)
            if os.id not in ("debian", "ubuntu"):
                raise StepError(f"unsupported system {os.id!r} {os.version_id}: sum_tasks supports Debian 12+ and Ubuntu 22.04+")
        converge(conn, package_ops(site, os), report, check)
        with report.step("read host facts and plan"):
            try:
                facts = parse_facts(conn.user, run(conn, facts_script(site), as_="root").stdout)
            except ValueError as err:
                raise StepError(str(err), "the firewall step needs them so it never shuts you out; check `sshd -t` on the host") from None
            refused = refusals(site, facts)
            if refused:
                raise StepError("refusing to take over what sum_tasks did not make: " + "; ".join(refused))
            plan = host_plan(site, facts, project_dir(c), offsite_password=operator_password(site, create=not check),
                             offsite_credentials=credentials)
        converge(conn, plan, report, check)
        restart_outdated_app(conn, site, report, check)
        converge(conn, shared_redis_ops(facts), report, check)
        report.summary()


def restart_outdated_app(c: Connection, site: Site, report: Report, check: bool) -> None:
    """Restart the running app onto what provision left, with no request dropped: its own user (a host provisioned
    before sites had one), its unit file and its .env. A free colour takes over, the way `env.restart` does, then
    the warm standby restarts in place."""
    user = site.paths.app_user
    with report.step(f"the app runs as {user}, with this unit and .env") as step:
        before = plan_colours.outdated(site, run(c, plan_colours.identities_script(site), as_="root").stdout)
        if not before:
            return
        step.note(f"to restart: {', '.join(before)}")
        if check:
            step.would_change(f"{', '.join(before)} run as another user or with an older unit or .env: a free colour takes over, health-gated")
            return
    with acting_as(site.deploy_user), site_lock(c, site, "provision"):
        state = colours.read_state(c, site)
        # The switch of a live restart restarts celery too.
        live_restarted = site.paths.colour(plan_colours.live_colour(state)).unit in before
        if live_restarted:
            restart_app(c, site, report)
            state = colours.read_state(c, site)
        standby = plan_colours.standby_colour(state)
        if standby and site.paths.colour(standby).unit in before:
            with report.step(f"restart the warm standby {standby} as {user}") as step:
                colours.start(c, site, standby, site.paths.release(state.colours[standby]), serving="the live colour still serves")
                step.changed()
        if not live_restarted and set(site.paths.celery_units()) & set(before):
            with report.step("restart celery") as step:
                run(c, plan_colours.celery_restart_script(site))
                step.changed()
        with report.step(f"every app unit runs as {user}, with this unit and .env"):
            left = plan_colours.outdated(site, run(c, plan_colours.identities_script(site), as_="root").stdout)
            if left:
                raise StepError(f"still outdated: {', '.join(left)}", "run `fab env.restart`, or provision again")
