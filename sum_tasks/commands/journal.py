"""The site's journald logs: which units each ``--service`` name means, and the journalctl script."""

from __future__ import annotations

from ..configuration import Site
from .script import Script, q

SERVICES = ("app", "caddy", "celery", "redis", "schedule", "backup", "offsite")


def units(site: Site, service: str) -> list[str]:
    """The systemd units behind a --service name: ``app`` is the gunicorn colours."""
    if service == "app":
        return [u for u in site.paths.app_units() if site.paths.unit_colour(u)]
    if service == "caddy":
        return ["caddy.service"]
    if service == "celery":
        return site.paths.celery_units()
    if service == "redis":
        return [site.paths.redis]
    if service == "schedule":
        return [site.paths.schedule(name)[0] for name in site.schedule]
    if service == "offsite":
        return [site.paths.offsite_service, site.paths.offsite_rehearse]
    return [site.paths.backup_service]


def journal_script(site: Site, service: str, lines: int, follow: bool) -> Script:
    """journalctl for the units; when following, it ends as soon as the SSH session closes (its stdin reaches EOF)."""
    command = "journalctl --no-pager --no-hostname -o with-unit " + " ".join(f"-u {q(u)}" for u in units(site, service)) + f" -n {lines}"
    if follow:
        command = f"{command} -f & pid=$!; trap 'kill $pid 2>/dev/null' EXIT HUP INT TERM; cat >/dev/null; exit 0"
    return Script(f"logs {service}", command)
