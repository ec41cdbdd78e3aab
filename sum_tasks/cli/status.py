"""fab status: what runs on each host: the live release, the ones before it, the last backup, the nightly timer, the lock."""

from __future__ import annotations

import time
from datetime import datetime

from fabric import Connection
from invoke import Context, task

from ..commands import schedules
from ..commands.backup import Entry, describe_timer, entry_time, format_age, format_size, parse_list, script_error, sorted_entries
from ..commands.colours import live_colour, standby_colour, warm_standby
from ..commands.state import ReleaseState
from ..configuration import Site
from ..host.output import Report, StepError
from ..host.runner import host_label, run
from ..host.targets import targets
from .colours import read_state
from .db import run_db
from .lock import read_holder

PREVIOUS = 5


def record_time(record: dict) -> float | None:
    """When a release record was written (its ``at``), as a timestamp, or None."""
    try:
        return datetime.fromisoformat(str(record.get("at", ""))).timestamp()
    except ValueError:
        return None


def describe_record(record: dict, now: float, on_disk: bool) -> str:
    """id, ref, short SHA, result, age and who, for one release record."""
    when = record_time(record)
    age = f"{format_age(now - when)} ago" if when is not None else "at an unknown time"
    result = record.get("result", "?") + (" (rollback)" if record.get("rollback") else "")
    return (f"{record['id']:<28} {record.get('ref', '')!s:<14} {str(record.get('sha', ''))[:12]:<12} {result:<24} "
            f"{age} by {record.get('who', '?')}" + ("" if on_disk else " (pruned)"))


def split_records(records: list[dict], current: str, count: int = PREVIOUS) -> tuple[dict | None, list[dict]]:
    """The live release's record, and up to `count` records before it, newest first."""
    live_at = next((i for i in range(len(records) - 1, -1, -1) if records[i]["id"] == current and records[i].get("result") == "good"), None)
    if live_at is None:
        return None, list(reversed(records))[:count]
    rest = records[:live_at] + records[live_at + 1:]
    return records[live_at], list(reversed(rest))[:count]


def describe_standby(state: ReleaseState) -> str:
    """Which colour a rollback takes over without a restart, and on which release."""
    colour = standby_colour(state)
    if not colour:
        return "none: a rollback starts its release afresh"
    release = state.colours[colour]
    if not warm_standby(state, release):
        return f"{colour} on {release}, not usable as is (stopped, or started before .env changed): a rollback restarts it"
    return f"{colour} running {release}: `fab rollback` to it switches without a restart"


def describe_backup(site: Site, now: int, entries: list[Entry]) -> str:
    """The newest backup: name, size, age, and whether it is verified."""
    newest = sorted_entries(site, entries)
    if not newest:
        return f"none in {site.paths.backups}: run `fab db.backup`"
    entry = newest[0]
    verified = "verified" if entry.verified else "NOT verified (no checksum file)"
    return f"{entry.name}, {format_size(entry.size)}, {format_age(now - entry_time(site, entry))} ago, {verified}"


def show_status(c: Connection, site: Site) -> None:
    report = Report("status", host_label(c))
    with report.step("read the host"):
        state = read_state(c, site)
        listing = run_db(c, site, ["list"])
        if not listing.ok:
            raise StepError(script_error(listing))
        now, entries, service, timer = parse_list(listing.stdout)
        holder = read_holder(c, site)
        scheduled = schedules.describe(site, run(c, schedules.schedules_script(site)).stdout) if site.schedule else []
    now = now or int(time.time())
    current, colour = state.current, live_colour(state)
    live, previous = split_records(list(state.records), current)
    if not current:
        report.print(f"  {'live':<12} nothing: no release yet (`fab release --ref ...`)")
    elif live:
        report.print(f"  {'live':<12} {describe_record(live, now, True)}, {colour or 'no colour'}"
                     + ("" if colour and state.active[colour] else " (NOT running: see `fab check`)"))
    else:
        report.print(f"  {'live':<12} {current} (no record of it in releases.jsonl)")
    report.print(f"  {'standby':<12} {describe_standby(state)}")
    for i, record in enumerate(previous):
        report.print(f"  {'previous' if i == 0 else '':<12} {describe_record(record, now, record['id'] in state.dirs)}")
    report.print(f"  {'last backup':<12} {describe_backup(site, now, entries)}")
    report.print(f"  {'nightly':<12} {describe_timer(service, timer)}")
    for name, text, _ in scheduled:
        report.print(f"  {'schedule':<12} {name}: {text}")
    report.print(f"  {'lock':<12} {holder or 'none'}")
    live_text = (f"{current} live" + (f" ({live.get('ref', '')})" if live else "")) if current else "no live release"
    report.print(f"[{report.host}] status: {live_text}, lock {'held' if holder else 'free'}")


@task
def status(c: Context) -> None:
    """The live release, the releases before it, the last backup, the nightly timer's and each schedule's last run, and who holds the lock."""
    for conn, site in targets(c):
        show_status(conn, site)
