"""The backup script (``templates/backup.sh.j2``) as data: rendering it, its arguments, and reading what it prints.

One bash script does all the work on the host: the ``db.*`` tasks send it over SSH and provision
installs the same script for the nightly timer. The protocol between it and Python, in one place:

- It runs as ``bash -c SCRIPT sum COMMAND ARGS...`` (see `db_script`), as the deploy user (``scratch``, ``restoredb``: as postgres).
- Exit status 0 is success; anything else is a failure, and its last ``sum-db: <reason>`` line on
  stderr says why (`script_error`).
- Results are lines ``TAG key=value ...`` on stdout, TAG upper case (`records`, `first`):
  ``BACKUP file= size= sha256= format= dump_seconds= verify_seconds=``;
  ``VERIFIED format= size= sha256= seconds=``; ``RESTORED db= seconds=``; ``PRUNED <name>``;
  ``STOPPED <unit>``, ``STARTED <unit>``, ``START_FAILED <unit>``; ``WAITING <lock>`` (another backup holds it);
  ``MIGRATE rc= verdict=ok|pending|failed pending= seconds=`` (or ``MIGRATE verdict=skipped seconds=``), after the ``@@migrate`` section
  holding what manage.py said.
- ``rehearse FILE`` prints ``VERIFIED``, ``SCRATCH db= seconds=`` (made), ``RESTORED``, ``COUNTED tables= rows= differing=
  seconds=``, the ``@@live`` and ``@@copy`` counts, ``@@migrate`` and ``MIGRATE``, ``REHEARSED file= seconds=`` once all
  passed; then, whatever happened once the scratch database was asked for, ``@@scratch`` and ``DROPPED db= seconds=`` (or
  ``DROP_FAILED db=``). The first record missing names the step that failed.
  ``SWITCHED live= kept= copy=``, ``HEALTHY <unit>``, ``DOWN seconds= stop= rename= [media=] start= health=``, ``SWITCHED_BACK live=`` (``switch``);
  ``SAFETY_DROPPED <db>``, ``SAFETY_KEPT <db> (why)`` (a backup of the live database, about the one a restore replaced).
- ``backup --media`` (a site backup) adds ``SITE snapshot= files= bytes= unchanged= added= seconds=`` (the dump, media/ and the ledger
  as one snapshot of the site repository; the same line is kept in ``<name>.media``), and ``MEDIA_DROPPED <dir>`` or
  ``MEDIA_KEPT <dir> (why)`` about the media a site restore replaced.
- ``stage-media [NAME]`` prints ``FETCHED snapshot= files= bytes= seconds=`` and ``STAGED files= seconds=``; ``switch --media``
  adds ``MEDIA_SWITCHED live= kept=`` (and ``MEDIA_SWITCHED_BACK live=`` on the way back).
- ``list`` prints ``@@now`` (the host's clock), ``@@files`` (name, size, mtime, checksum, re-hashed
  checksum; tab-separated, ``-`` for none), ``@@media`` (name, its ``SITE`` line), with ``--hash`` ``@@site`` (the site
  repository's snapshot ids, then ``SITE_CHECK ok`` or ``SITE_CHECK failed <why>`` after re-reading all its data),
  ``@@service`` and ``@@timer`` (``systemctl show`` lines),
  ``@@safety`` (name, size and comment of the database a restore replaced, when there is one).
- ``counts DB`` prints ``table<TAB>rows`` lines.

The database password never passes through here: the script reads it from ``.env`` on the host.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from invoke.exceptions import Exit

from ..configuration import Site
from ..configuration.hostmap import COLOURS, SYSTEMCTL, HostMap, systemctl
from . import health
from .script import Result, Script, q, sections
from .templating import render

GZIP_COMPRESS = "igzip -1 -c"
GZIP_FALLBACK = "pigz -1"
ZSTD_COMPRESS = "zstd -q -T0 -1"
FORMATS = ("gzip", "zstd")
FILE_MAX = 1024
LABEL_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
UPLOAD_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
# PostgreSQL's longest identifier, in bytes.
PG_NAME_MAX = 63


def derived_db_name(site: Site, prefix: str = "", suffix: str = "") -> str:
    """``<prefix><db><suffix>``, never a possible site database name (those have no '-'), at most 63 bytes: a long
    database name is cut and a hash of it added, so two sites never share one."""
    name = f"{prefix}{site.db_name}{suffix}"
    if len(name) <= PG_NAME_MAX:
        return name
    room = PG_NAME_MAX - len(prefix) - len(suffix) - 9
    return f"{prefix}{site.db_name[:room]}-{hashlib.sha256(site.db_name.encode()).hexdigest()[:8]}{suffix}"


def scratch_db_name(site: Site) -> str:
    """The rehearsal database, ``rehearse-<db>``."""
    return derived_db_name(site, prefix="rehearse-")


def restore_db_name(site: Site) -> str:
    """The database ``db.restore`` loads a backup into while the site serves, ``restore-<db>``; the switch makes it the live one."""
    return derived_db_name(site, prefix="restore-")


def safety_db_name(site: Site) -> str:
    """The live database a restore replaced, ``<db>-before-restore``, kept until the next good backup of the live database."""
    return derived_db_name(site, suffix="-before-restore")


def validate_keep(value: str | int) -> int | None:
    """``--keep``: empty for the configured ``sum.backups.keep``, else a whole number from 1 to 10000."""
    if value in ("", None):
        return None
    text = str(value).strip()
    if not text.isdigit() or not 1 <= int(text) <= 10000:
        raise Exit(f"--keep must be a whole number from 1 to 10000 (got {value!r})", code=2)
    return int(text)


def validate_format(value: str) -> str | None:
    """``--format``: empty for the configured ``sum.backups.format``, else gzip or zstd."""
    if not value:
        return None
    if value not in FORMATS:
        raise Exit(f"--format must be one of {', '.join(FORMATS)} (got {value!r})", code=2)
    return value


def validate_label(value: str) -> str:
    if value and not LABEL_RE.fullmatch(value):
        raise ValueError(f"backup label must be 1-32 of a-z, 0-9 and '-' (got {value!r})")
    return value


def validate_file(value: str, task_name: str = "db.restore") -> str:
    """``--file``: a backup name, a path on the server or a local path; one printable line, not an option."""
    if not value:
        raise Exit(f"{task_name}: --file is required: a backup name from `fab db.list`, a path on the server, or a local file", code=2)
    if len(value) > FILE_MAX or not value.isprintable() or value.startswith("-"):
        raise Exit(f"{task_name}: --file must be one printable line of at most {FILE_MAX} characters, not starting with '-'", code=2)
    return value


def resolve_file(site: Site, value: str, local_exists: bool) -> tuple[str, str]:
    """``("local", path)`` for a file on this machine, else ``("server", absolute path)``.

    A bare name is looked up in the site's backups directory; a path on the server must be absolute.
    """
    if local_exists:
        return "local", value
    if "/" not in value:
        return "server", f"{site.paths.backups}/{value}"
    if not value.startswith("/"):
        raise Exit(f"no local file {value!r}; a path on the server must be absolute", code=2)
    return "server", value


def parse_backup_time(site: Site, name: str) -> datetime | None:
    """The UTC time in a backup's name (``<slug>_db_<YYYYmmddTHHMMSSZ>[-label].sql.gz|zst``), or None."""
    match = re.fullmatch(rf"{re.escape(site.site_slug)}_db_(\d{{8}}T\d{{6}}Z)(?:-[a-z0-9-]+)?\.sql\.(?:gz|zst)", name)
    if not match:
        return None
    return datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def script_context(site: Site, root: str = "") -> dict[str, object]:
    """Template values; ``root`` replaces the site root (tests run the script in a temporary directory)."""
    paths = HostMap(site, root)
    values = {
        "root": paths.root,
        "backups": paths.backups,
        "env": paths.env,
        "slug": site.site_slug,
        "unit_prefix": paths.unit_prefix,
        "systemctl": SYSTEMCTL,
        "db_user": site.db_user,
        "db_name": site.db_name,
        "scratch_db": scratch_db_name(site),
        "scratch_create": paths.scratch_create,
        "scratch_drop": paths.scratch_drop,
        "restore_db": restore_db_name(site),
        "safety_db": safety_db_name(site),
        "lock": paths.lock,
        "switch_unit": paths.restore_switch,
        "back_unit": paths.restore_back,
        "format": site.backups.format,
        "site_repo": paths.site_repo,
        "site_password": paths.site_password,
        "media": paths.media,
        "staging": paths.media_staging,
        "recovery": paths.recovery,
        "app_user": paths.app_user,
        "media_unit": paths.media_unit("ACTION"),
    }
    return {
        "site": site,
        "paths": paths,
        "sh": {k: quoted(v) for k, v in values.items()},
        "health_waits": [(paths.colour(c).unit, health.wait_script(site, paths.colour(c).socket, site.health_timeout)) for c in COLOURS],
        "gzip_compress": GZIP_COMPRESS,
        "gzip_fallback": GZIP_FALLBACK,
        "zstd_compress": ZSTD_COMPRESS,
    }


def quoted(value: str) -> str:
    """`value` in single quotes, always (shell assignments read as one word, whatever it holds)."""
    return "'" + value.replace("'", "'\\''") + "'"


def script_text(site: Site, project_dir: str = "", root: str = "") -> str:
    """The whole script, as provision installs it (``root``: see `script_context`)."""
    return render("backup.sh.j2", script_context(site, root), project_dir)


def db_script(site: Site, args: Iterable[str], project_dir: str = "") -> Script:
    """The script sent over SSH to run one of its commands: ``backup``, ``verify FILE``, ``list``..."""
    args = tuple(args)
    return Script(f"backup script: {args[0]}", script_text(site, project_dir), shell="bash", args=args)


def records(stdout: str) -> list[tuple[str, str]]:
    """The script's result lines: ``(TAG, rest)`` for each line starting with an upper-case word."""
    found = []
    for line in stdout.splitlines():
        tag, _, rest = line.partition(" ")
        if re.fullmatch(r"[A-Z_]+", tag):
            found.append((tag, rest.strip()))
    return found


def fields(rest: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in rest.split() if "=" in part)


def first(stdout: str, tag: str) -> dict[str, str] | None:
    return next((fields(rest) for t, rest in records(stdout) if t == tag), None)


def script_error(result: Result) -> str:
    """The script's own explanation (its last ``sum-db:`` line), else the last line it printed."""
    lines = [line.strip() for line in (result.stderr or "").splitlines() if line.strip()]
    own = [line[len("sum-db: "):] for line in lines if line.startswith("sum-db: ")]
    if own:
        return own[-1]
    tail = lines or [line for line in (result.stdout or "").splitlines() if line.strip()]
    return tail[-1] if tail else f"exit status {result.exited}"


def format_size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return ""


def format_age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"


def verified_text(info: dict[str, str]) -> str:
    return f"verified: {info.get('format', '?')} stream whole, dump complete, sha256 {info.get('sha256', '?')[:12]}"


@dataclass(frozen=True)
class Entry:
    """One backup file on the host, as the script's ``list`` reports it."""

    name: str
    size: int
    mtime: int
    checksum: str
    actual: str = ""

    @property
    def verified(self) -> bool:
        """It has a checksum file (written only after verification) and, when re-hashed, matches it."""
        return bool(self.checksum) and (not self.actual or self.actual == self.checksum)


def parse_list(stdout: str) -> tuple[int, list[Entry], dict[str, str], dict[str, str]]:
    """The script's ``list`` output: the host's clock, the backups, and the nightly service and timer properties."""
    parts = sections(stdout)
    now = int(parts.get("now", "0").strip() or 0)
    entries = []
    for line in parts.get("files", "").splitlines():
        cols = line.split("\t")
        if len(cols) == 5 and cols[1].isdigit() and cols[2].isdigit():
            name, size, mtime, checksum, actual = cols
            entries.append(Entry(name, int(size), int(mtime), "" if checksum == "-" else checksum, "" if actual == "-" else actual))
    props = [dict(line.split("=", 1) for line in parts.get(key, "").splitlines() if "=" in line) for key in ("service", "timer")]
    return now, entries, props[0], props[1]


@dataclass(frozen=True)
class Media:
    """A backup's site snapshot (its ``.media`` record): the snapshot of the site repository holding its dump and media/."""

    snapshot: str
    files: int
    size: int

    def describe(self) -> str:
        return f"+ media {self.snapshot[:8]} ({self.files} files, {format_size(self.size)})"


def parse_media(stdout: str) -> dict[str, Media]:
    """The ``@@media`` section of the script's ``list``: each site backup's name and its snapshot."""
    found = {}
    for line in sections(stdout).get("media", "").splitlines():
        name, _, record = line.partition("\t")
        info = first(record, "SITE")
        if info and info.get("snapshot") and info.get("files", "").isdigit() and info.get("bytes", "").isdigit():
            found[name] = Media(info["snapshot"], int(info["files"]), int(info["bytes"]))
    return found


def parse_site_check(stdout: str) -> tuple[set[str], str] | None:
    """With ``list --hash``: the site repository's snapshot ids and '' when all its data re-read correctly, else why not;
    None when there is no site repository."""
    part = sections(stdout).get("site")
    if part is None:
        return None
    ids = {line.strip() for line in part.splitlines() if re.fullmatch(r"[0-9a-f]{8,64}", line.strip())}
    verdict = next((rest for tag, rest in records(part) if tag == "SITE_CHECK"), "failed no answer")
    return ids, "" if verdict == "ok" else verdict.removeprefix("failed").strip() or "restic check failed"


def entry_time(site: Site, entry: Entry) -> float:
    """When the backup was taken: the time in its name, else the file's modification time."""
    when = parse_backup_time(site, entry.name)
    return when.timestamp() if when else float(entry.mtime)


def sorted_entries(site: Site, entries: Iterable[Entry]) -> list[Entry]:
    """Newest first."""
    return sorted(entries, key=lambda e: (entry_time(site, e), e.name), reverse=True)


def newest_verified(site: Site, entries: Iterable[Entry]) -> Entry | None:
    return next((e for e in sorted_entries(site, entries) if e.verified), None)


def describe_entry(site: Site, entry: Entry, now: int, media: Media | None = None) -> str:
    if entry.actual and entry.actual != entry.checksum:
        state = "CHECKSUM MISMATCH" if entry.checksum else "not verified (no checksum file)"
    elif entry.checksum:
        state = "verified, checksum re-read and matches" if entry.actual else "verified"
    else:
        state = "not verified (no checksum file)"
    line = f"{entry.name:<52} {format_size(entry.size):>9}  {format_age(now - entry_time(site, entry)) + ' ago':>10}  {state}"
    return f"{line}  {media.describe()}" if media else line


def describe_timer(service: dict[str, str], timer: dict[str, str], what: str = "nightly") -> str:
    """One line on a timer's service (the nightly backup, a schedule): its last result and its next run."""
    if timer.get("LoadState") != "loaded":
        return f"{what}: no timer on this host (run provision)"
    state = "enabled" if timer.get("UnitFileState") == "enabled" and timer.get("ActiveState") == "active" else (
        f"NOT running ({timer.get('UnitFileState', '?')}, {timer.get('ActiveState', '?')})"
    )
    finished = service.get("ExecMainExitTimestamp", "")
    if service.get("ActiveState") == "activating":
        last = f"running now (since {service.get('ExecMainStartTimestamp', '?')})"
    elif not finished:
        last = "has not run yet"
    elif service.get("Result") == "success" and service.get("ExecMainStatus", "0") == "0":
        last = f"last run {finished}: succeeded"
    else:
        last = f"last run {finished}: FAILED ({service.get('Result', '?')}, exit status {service.get('ExecMainStatus', '?')})"
    upcoming = timer.get("NextElapseUSecRealtime", "")
    return f"{what} ({state}): {last}" + (f"; next {upcoming}" if upcoming else "")


def upload_script(site: Site, name: str, sha256: str, as_root: bool) -> Script:
    """Finish an upload: private, the deploy user's, the sha256 it had here, stored under its own name."""
    tmp, dest = q(f"{site.paths.backups}/.{name}.upload"), q(f"{site.paths.backups}/{name}")
    user = q(site.deploy_user)
    return Script(f"store {name}", "\n".join([
        "set -e",
        f"chmod 600 {tmp}",
        f"chown {user}:{user} {tmp}" if as_root else ":",
        f'got=$(sha256sum < {tmp} | cut -c1-64)',
        f'if [ "$got" != {sha256} ]; then rm -f {tmp}; echo "sum-db: damaged in transfer: sha256 $got, the local file has {sha256}" >&2; exit 1; fi',
        f"if [ -e {dest} ]; then",
        f'  rm -f {tmp}; [ "$(sha256sum < {dest} | cut -c1-64)" = {sha256} ] && {{ echo KEPT; exit 0; }}',
        f'  echo "sum-db: a different {name} is already in {site.paths.backups}: rename the local file" >&2; exit 1',
        "fi",
        f"mv {tmp} {dest}",
        "echo STORED",
    ]))


def restore_notes(stdout: str) -> list[str]:
    """What the script did, in order: the load, units stopped, the switch, units started, the app down, a safety dump."""
    notes = []
    for tag, rest in records(stdout):
        info = fields(rest)
        if tag == "WAITING":
            notes.append("waited for a running backup to finish, the app still serving")
        elif tag in ("STOPPED", "STARTED", "START_FAILED"):
            notes.append(f"{tag.lower().replace('_', ' ')} {rest}")
        elif tag == "SWITCHED":
            notes.append(f"renamed {info['live']} to {info['kept']} and {info['copy']} to {info['live']} in one transaction")
        elif tag == "HEALTHY":
            notes.append(f"/health/ 200 on {rest}")
        elif tag == "DOWN":
            parts = [f"{k} {info[k]}s" for k in ("stop", "rename", "media", "start", "health") if k in info]
            notes.append(f"app down {info['seconds']}s" + (f" ({', '.join(parts)})" if parts else ""))
        elif tag == "SWITCHED_BACK":
            notes.append(f"put the old {info['live']} back")
        elif tag == "MEDIA_SWITCHED":
            notes.append(f"media switched in, the replaced media kept in {info['kept']}")
        elif tag == "MEDIA_SWITCHED_BACK":
            notes.append("put the old media back")
        elif tag == "BACKUP":
            notes.append(f"safety backup {info['file']} ({format_size(int(info['size']))}, verified)")
        elif tag == "RESTORED":
            notes.append(f"restored in {info['seconds']}s, one transaction")
    return notes


def safety_note(stdout: str) -> str:
    """What a backup of the live database did with the database (and a site backup with the media) the last restore
    replaced ('' when there was none)."""
    notes = []
    for tag, rest in records(stdout):
        if tag == "SAFETY_DROPPED":
            notes.append(f"dropped {rest}, the database the last restore replaced")
        elif tag == "MEDIA_DROPPED":
            notes.append(f"dropped {rest}, the media the last restore replaced")
        elif tag in ("SAFETY_KEPT", "MEDIA_KEPT"):
            notes.append(f"kept {rest}")
    return "; ".join(notes)


@dataclass(frozen=True)
class SafetyDb:
    """The database a restore replaced, kept until the next good backup of the live database."""

    name: str
    size: int
    comment: str

    def describe(self) -> str:
        when = self.comment.removeprefix("sum_tasks: ") or "replaced by db.restore"
        return f"safety database {self.name}, {format_size(self.size)}: {when}; the next good backup drops it"


def parse_safety(stdout: str) -> SafetyDb | None:
    """The ``@@safety`` section of the script's ``list``: name, size and comment of the kept database, if there is one."""
    for line in sections(stdout).get("safety", "").splitlines():
        cols = line.split("\t")
        if len(cols) == 3 and cols[1].isdigit():
            return SafetyDb(cols[0], int(cols[1]), cols[2])
    return None


def compare_counts(live: dict[str, int], scratch: dict[str, int]) -> tuple[list[str], list[str]]:
    """Row counts of the restored copy against the live database: (notes, differences)."""
    notes = [f"{len(scratch)} tables, {sum(scratch.values()):,} rows"]
    differences = [f"{t}: {scratch[t]:,} restored, {live[t]:,} live" for t in sorted(scratch) if t in live and scratch[t] != live[t]]
    differences += [f"{t}: only in the backup" for t in sorted(set(scratch) - set(live))]
    differences += [f"{t}: only live" for t in sorted(set(live) - set(scratch))]
    if not differences:
        notes.append("the same tables and row counts as the live database")
    return notes, differences


def parse_counts(stdout: str) -> dict[str, int]:
    counts = {}
    for line in stdout.splitlines():
        table, _, count = line.partition("\t")
        if count.strip().isdigit():
            counts[table] = int(count)
    return counts


def migrate_verdict(section: str) -> tuple[bool, str]:
    """Whether the live release's ``migrate --check --plan`` accepts the restored copy, and what to say, from the script's
    ``@@migrate`` section: its ``MIGRATE`` verdict and the lines before it.

    Unapplied migrations (a backup taken before the release that added them) are not an error:
    a restore of it needs ``migrate``. Anything else (an exception, no connection) is.
    """
    info = first(section, "MIGRATE")
    if info is None:
        return False, "no answer from manage.py"
    output = [line for line in section.splitlines() if line.strip() and not line.startswith("MIGRATE")]
    verdict = info.get("verdict")
    if verdict == "skipped":
        return True, "skipped: no release is live (no current/.venv)"
    if verdict == "ok":
        return True, "no unapplied migrations"
    if verdict == "pending":
        return True, (f"{info.get('pending', '?')} migrations not applied in this backup (a restore of it needs `migrate`): "
                      f"{', '.join(output[:5])}")
    return False, "\n".join(output[-8:]) or f"exit status {info.get('rc', '?')}"


def running_script(site: Site) -> Script:
    """`systemctl is-active` of each of the site's app units, in `HostMap.app_units` order."""
    return Script("find the running app", "systemctl is-active " + " ".join(q(u) for u in site.paths.app_units()))


def start_unit_script(unit: str) -> Script:
    """Start one of the units the deploy user may start (sudoers)."""
    return Script(f"start {unit}", systemctl("start", unit))
