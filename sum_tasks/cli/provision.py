"""fab provision: converge the host onto the golden path (the runbook's sections 1-8 and 13).

Reads the OS release, installs packages, reads the host's facts, then converges the plan
``operations/plan.py`` computes from them; each `Op` is one step of the output.
"""

from __future__ import annotations

from invoke import Context, task

from ..commands.facts import facts_script, os_release_script, parse_facts, parse_os_release
from ..host.converge import converge
from ..host.output import Report, StepError
from ..host.runner import host_label, run
from ..host.targets import project_dir, targets
from ..operations.packages import package_ops
from ..operations.plan import host_plan, refusals


@task(help={"check": "show what would change; change nothing"})
def provision(c: Context, check: bool = False) -> None:
    """Converge the host onto the golden path: packages, users, firewall, PostgreSQL, Redis, units, Caddy."""
    for conn, site in targets(c, role="admin", destructive=True):
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
            plan = host_plan(site, facts, project_dir(c))
        converge(conn, plan, report, check)
        report.summary()
