"""`sum.schedule`: each entry's last run and next run, read from its service and timer (for `check` and `status`)."""

from __future__ import annotations

from ..configuration import Site
from .backup import describe_timer
from .script import Script, q, sections

SERVICE_PROPS = "Result,ExecMainStatus,ExecMainStartTimestamp,ExecMainExitTimestamp,ActiveState"
TIMER_PROPS = "LoadState,UnitFileState,ActiveState,NextElapseUSecRealtime"


def show_text(site: Site) -> str:
    """Shell printing, for each schedule, sections ``@@schedule NAME`` and ``@@schedule_timer NAME`` (systemctl show)."""
    text = ""
    for name in site.schedule:
        service, timer = site.paths.schedule(name)
        text += (f"echo '@@schedule {name}'; systemctl show -p {SERVICE_PROPS} {q(service)}; "
                 f"echo '@@schedule_timer {name}'; systemctl show -p {TIMER_PROPS} {q(timer)}\n")
    return text


def schedules_script(site: Site) -> Script:
    return Script("read the schedules", show_text(site) or "true")


def properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def describe(site: Site, output: str) -> list[tuple[str, str, bool]]:
    """(name, one line on its last and next run, whether that is a failure) for each schedule, from `show_text`'s output."""
    parts, found = sections(output), []
    for name, entry in site.schedule.items():
        text = describe_timer(properties(parts.get(f"schedule {name}", "")), properties(parts.get(f"schedule_timer {name}", "")),
                              f"manage.py {' '.join(entry.command)}, {entry.when}")
        found.append((name, text, "no timer" in text or "NOT running" in text or "FAILED" in text))
    return found
