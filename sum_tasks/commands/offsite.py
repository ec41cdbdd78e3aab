"""The off-site copy's commands and what they print: the status lines the copy and the rehearsal leave, and restic's
snapshot list."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from ..configuration import Site
from ..configuration.hostmap import systemctl
from .backup import fields, format_age
from .lock import BUSY
from .script import Script, q

# The backup machine's side: the one thing this site's key may run there.
FORCED_COMMAND = "rclone serve restic --stdio --append-only {path}"
TARGET_ROOT = "/srv/restic"


def login(site: Site) -> tuple[str, int]:
    """``user@host`` and the port of `sum.offsite.target`."""
    target, _, port = site.offsite.target.partition(":")
    return target, int(port or 22)


def script_context(site: Site) -> dict[str, object]:
    """The off-site script's template values (its units' too)."""
    target, port = login(site)
    return {"site": site, "login": target, "port": port, "busy": BUSY}


def known_hosts_line(site: Site) -> str:
    host, port = login(site)[0].split("@", 1)[1], login(site)[1]
    return f"{host if port == 22 else f'[{host}]:{port}'} {site.offsite.host_key}\n"


def authorized_keys_line(site: Site, public_key: str) -> str:
    """The line for the backup machine's ``authorized_keys``: this site's key, forced into its own append-only repository."""
    command = FORCED_COMMAND.format(path=f"{TARGET_ROOT}/{site.site_slug}")
    return f'restrict,command="{command}" {public_key.strip()}\n'


def copy_script(site: Site) -> Script:
    """Start the off-site copy (the deploy user's sudo rule), then print the status line it left."""
    return Script("off-site copy", f"{systemctl('start', site.paths.offsite_service)} && cat {q(site.paths.offsite_status)}")


def snapshots_script(site: Site) -> Script:
    return Script("list off-site snapshots", f"{q(site.paths.offsite_script)} snapshots")


def restore_script(site: Site, snapshot: str) -> Script:
    """Restore `snapshot` into recovery/ (its dump straight into backups/, its media for a site restore to stage)."""
    return Script(f"restore snapshot {snapshot}", f"{q(site.paths.offsite_script)} restore {q(snapshot)}")


def rehearse_script(site: Site, snapshot: str, by: str) -> Script:
    """The off-site script's rehearsal of `snapshot`, as the timer runs it but refused at once when the site is locked
    (exit `BUSY`); `by` names who asked, for the lock's holder line."""
    return Script(f"rehearse snapshot {snapshot}", f"{q(site.paths.offsite_script)} rehearse {q(snapshot)} --by {q(by)}")


def parse_restored(text: str) -> tuple[str, dict | None]:
    """The dump the restore put in backups/, and the release that was live when the snapshot was taken (the ledger's
    last good record), from the restore script's output."""
    head, _, ledger = text.partition("@@ledger")
    dump = next((line.split("=", 1)[1] for line in head.splitlines() if line.startswith("RESTORED dump=")), "")
    live = None
    for line in ledger.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("result") == "good" and record.get("sha"):
            live = record
    return dump, live


def public_key_script(site: Site) -> Script:
    return Script("read the site's off-site key", f"cat {q(site.paths.offsite_key)}.pub")


@dataclass(frozen=True)
class Status:
    """The last good off-site copy, from the status line (``OFFSITE at=... snapshot=... dump=...``)."""

    at: int
    snapshot: str
    dump: str
    fields: dict[str, str]

    def describe(self, now: int) -> str:
        copied = self.fields.get("copied", "?")
        return (f"snapshot {self.snapshot[:8]} of {self.dump}, {format_age(now - self.at)} old; "
                f"{copied} site backups copied, {self.fields.get('seconds', '?')}s")


def parse_status(text: str) -> Status | None:
    line = next((line for line in text.splitlines() if line.startswith("OFFSITE ")), "")
    got = fields(line)
    if not got.get("at", "").isdigit() or not got.get("snapshot"):
        return None
    return Status(int(got["at"]), got["snapshot"], got.get("dump", ""), got)


@dataclass(frozen=True)
class Rehearsal:
    """The last rehearsal from the off-site copy, from its status line (``REHEARSAL at=... result=passed|failed ...``)."""

    at: int
    passed: bool
    fields: dict[str, str]
    reason: str

    def detail(self) -> str:
        """What was rehearsed and what it found (or, failed, where and why)."""
        got = self.fields
        source = f"{got.get('dump', '-')} of snapshot {got.get('snapshot', '?')[:8]}"
        if not self.passed:
            return f"at {got.get('step', '?')}: {self.reason or 'no reason given'} ({source})"
        rows = got.get("rows", "")
        migrations = (f"{got.get('pending', '?')} migrations not applied in it" if got.get("migrations") == "pending"
                      else f"migrate --check {got.get('migrations', '?')}")
        return (f"{source}, {got.get('tables', '?')} tables, {f'{int(rows):,}' if rows.isdigit() else '?'} rows, {migrations}, "
                f"{got.get('seconds', '?')}s")

    def describe(self, now: int) -> str:
        return f"{'passed' if self.passed else 'FAILED'} {format_age(now - self.at)} ago{':' if self.passed else ''} {self.detail()}"


def parse_rehearsal(text: str) -> Rehearsal | None:
    """The ``REHEARSAL`` line of the status file (or of a rehearsal's output); None when there is none."""
    line = next((line for line in reversed(text.splitlines()) if line.startswith("REHEARSAL ")), "")
    head, _, reason = line.partition(" reason=")
    got = fields(head)
    if not got.get("at", "").isdigit() or got.get("result") not in ("passed", "failed"):
        return None
    return Rehearsal(int(got["at"]), got["result"] == "passed", got, reason.strip())


@dataclass(frozen=True)
class Snapshot:
    id: str
    time: str
    dump: str
    paths: tuple[str, ...]


def parse_snapshots(text: str) -> list[Snapshot]:
    """restic's ``snapshots --json``, newest first."""
    snapshots = []
    for entry in json.loads(text or "[]") or []:
        dump = next((t.split("=", 1)[1] for t in entry.get("tags", []) if t.startswith("dump=")), "")
        when = datetime.fromisoformat(entry["time"][:19]).replace(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        snapshots.append(Snapshot(entry["id"], when, dump, tuple(entry.get("paths", []))))
    return sorted(snapshots, key=lambda s: s.time, reverse=True)
