"""fab check: the ops smoke checklist, one line per check, from one command (``commands/check.py`` judges)."""

from __future__ import annotations

import io
import time

from fabric import Connection
from invoke import Context, task
from invoke.exceptions import Exit

from ..commands.check import Check, check_script, counts, judge
from ..configuration import Site
from ..host.output import Report, StepFailed
from ..host.runner import host_label, run
from ..host.targets import on_hosts, project_dir, targets


def check_host(c: Connection, site: Site, stream: io.StringIO | None = None) -> list[Check]:
    """Run the checklist on one host, printing one line per check; a host that cannot be read is one failed check."""
    report = Report("check", host_label(c), stream)
    try:
        with report.step("read the host (one command)"):
            output = run(c, check_script(site, project_dir(c)), check=False, timeout=120).stdout
    except StepFailed as err:
        checks = [Check("host", "fail", err.reason.strip().splitlines()[-1] if err.reason.strip() else "could not be read")]
    else:
        checks = judge(site, output)
    for item in checks:
        report.print(item.line())
    report.print(f"[{report.host}] check: {counts(checks)} in {time.monotonic() - report.started:.1f}s")
    return checks


@task(help={"parallel": "check several hosts (sum.hosts) at once"})
def check(c: Context, parallel: bool = False) -> None:
    """The ops smoke checklist: Redis, services, /health/, firewall, .env, disk, TLS, backups, off-site copies and their
    rehearsal; non-zero exit on any fail."""
    results = on_hosts(check_host, list(targets(c, role="admin")), parallel)
    failed = {host: [item.name for item in checks if item.status == "fail"] for host, checks in results.items()}
    failed = {host: names for host, names in failed.items() if names}
    if failed:
        raise Exit("check failed: " + "; ".join(f"{host}: {', '.join(names)}" for host, names in failed.items()), code=1)
