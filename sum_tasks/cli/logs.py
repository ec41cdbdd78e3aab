"""fab logs: the site's journald logs over SSH, as the deploy user (a member of systemd-journal)."""

from __future__ import annotations

from fabric import Connection
from invoke import Context, task
from invoke.exceptions import Exit

from ..commands.journal import SERVICES, journal_script, units
from ..configuration import Site, load_site
from ..host.runner import host_label, stream
from ..host.targets import targets

MAX_LINES = 100000


def validate_service(service: str, site: Site) -> str:
    if service not in SERVICES:
        raise Exit(f"--service must be one of {', '.join(SERVICES)} (got {service!r})", code=2)
    if service == "celery" and not site.celery:
        raise Exit("--service celery: celery is not enabled for this site (sum.celery)", code=2)
    if service == "schedule" and not site.schedule:
        raise Exit("--service schedule: this site has no sum.schedule entries", code=2)
    return service


def validate_lines(lines: str | int) -> int:
    text = str(lines).strip()
    if not text.isdigit() or not 1 <= int(text) <= MAX_LINES:
        raise Exit(f"--lines must be a whole number from 1 to {MAX_LINES} (got {lines!r})", code=2)
    return int(text)


def show_logs(c: Connection, site: Site, service: str, lines: int, follow: bool) -> None:
    label = host_label(c)
    print(f"[{label}] logs {service}: {', '.join(units(site, service))}" + (" (following; Ctrl-C ends)" if follow else ""), flush=True)
    status = stream(c, journal_script(site, service, lines, follow))
    if status is None:
        print(f"\n[{label}] logs: stopped", flush=True)
    elif status:
        raise Exit(f"[{label}] journalctl exited {status}: is {c.user} in the systemd-journal group (run provision)?", code=1)


@task(help={
    "service": "app (the gunicorn colours, the default), caddy, celery, redis (the site's own), schedule (every sum.schedule run) or backup (the nightly backup)",
    "follow": "keep printing new lines until Ctrl-C",
    "lines": "how many recent lines to show first (default 50)",
})
def logs(c: Context, service: str = "app", follow: bool = False, lines: str = "50") -> None:
    """The site's journald logs over SSH: gunicorn (every colour), caddy, celery or the nightly backup."""
    site = load_site(c.config.get("sum", {}))
    validate_service(service, site)
    count = validate_lines(lines)
    for conn, site in targets(c):
        show_logs(conn, site, service, count, follow)
