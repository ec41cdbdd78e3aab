"""db.backup, db.restore, db.list, db.rehearse: verified backups, and restores that change all or nothing.

The work on the host is one bash script (``templates/backup.sh.j2``), sent over SSH by these
tasks and installed by provision for the nightly timer: one implementation of dumping,
verifying, pruning and restoring. The functions here build its arguments, read its output and
report; they never see the database password, which the script takes from ``.env``.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fabric import Connection
from invoke import Collection, Context, task
from invoke.exceptions import Exit
from invoke.runners import Result

from .config import BACKUP_FORMATS, COLOURS, Site
from .health import colour_socket, socket_colour, wait_healthy
from .hooks import run_hooks
from .lock import site_lock
from .ops import Op, file_op
from .output import Report, StepError
from .remote import host_label, on_hosts, parse_sections, q, run, targets
from .templating import render

GZIP_COMPRESS = "igzip -1 -c"
GZIP_FALLBACK = "pigz -1"
ZSTD_COMPRESS = "zstd -q -T0 -1"
FILE_MAX = 1024
LABEL_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
UPLOAD_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
RUNNING = ("active", "activating", "reloading")
SCRIPT_NAME = "sum-db"


# ---------------------------------------------------------------- names, paths, validation


def script_path(site: Site) -> str:
    """Where provision installs the backup script (the nightly service runs it)."""
    return f"/usr/local/bin/{site.unit_prefix}-db"


def backups_dir(site: Site) -> str:
    return f"{site.root}/backups"


def scratch_db_name(site: Site) -> str:
    """The rehearsal database: never a possible site database name (those have no '-'), at most 63 bytes."""
    name = f"rehearse-{site.db_name}"
    if len(name) <= 63:
        return name
    return f"rehearse-{site.db_name[:45]}-{hashlib.sha256(site.db_name.encode()).hexdigest()[:8]}"


def backup_units(site: Site) -> dict[str, str]:
    """Unit names: the nightly service and timer, and the units that create and drop the scratch database."""
    prefix = site.unit_prefix
    return {
        "service": f"{prefix}-backup.service",
        "timer": f"{prefix}-backup.timer",
        "scratch_create": f"{prefix}-scratchdb-create.service",
        "scratch_drop": f"{prefix}-scratchdb-drop.service",
    }


def app_units(site: Site) -> list[str]:
    """The units a restore stops and starts again (those running): the gunicorn colours, and celery when enabled."""
    units = [f"{site.unit_prefix}-gunicorn@{colour}.service" for colour in COLOURS]
    return units + ([f"{site.unit_prefix}-celery.service"] if site.celery else [])


def unit_colour(unit: str) -> str:
    """``blue`` for ``sum-x-gunicorn@blue.service``; empty for a unit that is not a gunicorn colour."""
    match = re.search(r"-gunicorn@([a-z]+)\.service$", unit)
    return match.group(1) if match else ""


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
    if value not in BACKUP_FORMATS:
        raise Exit(f"--format must be one of {', '.join(BACKUP_FORMATS)} (got {value!r})", code=2)
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
        return "server", f"{backups_dir(site)}/{value}"
    if not value.startswith("/"):
        raise Exit(f"no local file {value!r}; a path on the server must be absolute", code=2)
    return "server", value


def parse_backup_time(site: Site, name: str) -> datetime | None:
    """The UTC time in a backup's name (``<slug>_db_<YYYYmmddTHHMMSSZ>[-label].sql.gz|zst``), or None."""
    match = re.fullmatch(rf"{re.escape(site.site_slug)}_db_(\d{{8}}T\d{{6}}Z)(?:-[a-z0-9-]+)?\.sql\.(?:gz|zst)", name)
    if not match:
        return None
    return datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


# ---------------------------------------------------------------- the script and its output


def script_context(site: Site, root: str | None = None) -> dict[str, object]:
    """Template values; ``root`` replaces the site root (tests run the script in a temporary directory)."""
    values = {
        "root": root or site.root,
        "slug": site.site_slug,
        "unit_prefix": site.unit_prefix,
        "db_name": site.db_name,
        "scratch_db": scratch_db_name(site),
        "format": site.backups.format,
    }
    return {
        "site": site,
        "sh": {k: q(v) for k, v in values.items()},
        "gzip_compress": GZIP_COMPRESS,
        "gzip_fallback": GZIP_FALLBACK,
        "zstd_compress": ZSTD_COMPRESS,
    }


def db_script(site: Site, project_dir: str = "", root: str | None = None) -> str:
    return render("backup.sh.j2", script_context(site, root), project_dir)


def script_command(script: str, args: Iterable[str]) -> str:
    """The shell command that runs `script` with `args`, each quoted."""
    return " ".join(["exec bash -c", q(script), SCRIPT_NAME, *(q(a) for a in args)])


def project_dir(c: Context) -> str:
    from .provision import project_dir as from_config

    return from_config(c)


def run_db(c: Connection, site: Site, args: list[str]) -> Result:
    """Run the script on the host as the deploy user; never raises on its exit status."""
    command = script_command(db_script(site, project_dir(c)), args)
    return run(c, command, user=None if c.user == site.deploy_user else site.deploy_user, warn=True)


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


# ---------------------------------------------------------------- backup


@dataclass(frozen=True)
class Backup:
    path: str
    size: int
    sha256: str
    seconds: float


def run_backup(c: Connection, site: Site, report: Report, label: str = "", keep: int | None = None, fmt: str | None = None) -> Backup:
    """Dump, verify, checksum and prune on the host; one report step naming the file, its size and time."""
    validate_label(label)
    args = ["backup", "--format", fmt or site.backups.format, "--keep", str(keep or site.backups.keep)]
    if label:
        args += ["--label", label]
    with report.step(f"backup ({label})" if label else "backup") as step:
        started = time.monotonic()
        result = run_db(c, site, args)
        info = first(result.stdout, "BACKUP")
        if not result.ok or info is None:
            raise StepError(script_error(result), "nothing was replaced; older backups are untouched")
        pruned = [rest for tag, rest in records(result.stdout) if tag == "PRUNED"]
        seconds = time.monotonic() - started
        step.changed(
            f"{info['file']}, {format_size(int(info['size']))} in {seconds:.2f}s "
            f"(dump {info['dump_seconds']}s, verify {info['verify_seconds']}s), {verified_text(info)}"
            + (f"; pruned {len(pruned)} older" if pruned else "")
        )
    return Backup(info["file"], int(info["size"]), info["sha256"], seconds)


def backup(c: Connection, site: Site, report: Report, label: str = "") -> str:
    """Take a verified backup now (``release`` calls this before migrating); returns its path on the host."""
    return run_backup(c, site, report, label).path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_dir(c: Context, site: Site, to: str = "") -> Path:
    """``--to``, or ``backups/<slug>/`` beside fabric.yaml (the current directory without one)."""
    if to:
        return Path(to).expanduser()
    return Path(project_dir(c) or os.getcwd()) / "backups" / site.site_slug


def download_backup(c: Connection, site: Site, report: Report, item: Backup, dest: Path) -> Path:
    """Copy a backup here, check its sha256 against the one taken on the host, keep it with its checksum file."""
    name = item.path.rsplit("/", 1)[-1]
    with report.step("download") as step:
        fresh = not dest.parent.exists()
        dest.mkdir(mode=0o700, parents=True, exist_ok=True)
        if fresh and dest.parent.name == "backups":
            (dest.parent / ".gitignore").write_text("# Database backups: never commit them.\n*\n")
        partial = dest / f".{name}.partial"
        try:
            partial.touch(mode=0o600)
            partial.chmod(0o600)
            c.get(item.path, str(partial))
            got = sha256_file(partial)
            if got != item.sha256:
                raise StepError(f"the copy is damaged: sha256 {got}, the host has {item.sha256}", "run db.backup --download again")
            partial.chmod(0o600)
            (dest / f"{name}.sha256").write_text(f"{item.sha256}  {name}\n")
            partial.replace(dest / name)
        finally:
            partial.unlink(missing_ok=True)
        step.changed(f"{dest / name}, sha256 matches the host's")
    return dest / name


@task(
    name="backup",
    auto_shortflags=False,
    help={
        "keep": "keep this many newest backups (default sum.backups.keep); the newest verified one is never pruned",
        "download": "also copy the backup to this machine, checksum verified",
        "format": "gzip (.sql.gz) or zstd (.sql.zst: smaller, quicker to verify); default sum.backups.format",
        "to": "directory for --download (default: backups/<slug>/ beside fabric.yaml)",
        "parallel": "back up several hosts (sum.hosts) at once",
    },
)
def backup_task(c: Context, keep: str = "", download: bool = False, format: str = "", to: str = "", parallel: bool = False) -> None:
    """Back up the site's database on the host: compressed plain SQL, verified, checksummed, with retention."""
    keep_n, fmt = validate_keep(keep), validate_format(format)

    def one(conn: Connection, site: Site, stream: io.StringIO | None) -> str:
        report = Report("db.backup", host_label(conn), stream)
        item = run_backup(conn, site, report, keep=keep_n, fmt=fmt)
        if download:
            download_backup(conn, site, report, item, download_dir(c, site, to))
        report.summary(item.path)
        return item.path

    on_hosts(one, list(targets(c)), parallel)


# ---------------------------------------------------------------- list


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
    sections = parse_sections(stdout)
    now = int(sections.get("now", "0").strip() or 0)
    entries = []
    for line in sections.get("files", "").splitlines():
        parts = line.split("\t")
        if len(parts) == 5 and parts[1].isdigit() and parts[2].isdigit():
            name, size, mtime, checksum, actual = parts
            entries.append(Entry(name, int(size), int(mtime), "" if checksum == "-" else checksum, "" if actual == "-" else actual))
    props = [dict(line.split("=", 1) for line in sections.get(key, "").splitlines() if "=" in line) for key in ("service", "timer")]
    return now, entries, props[0], props[1]


def entry_time(site: Site, entry: Entry) -> float:
    """When the backup was taken: the time in its name, else the file's modification time."""
    when = parse_backup_time(site, entry.name)
    return when.timestamp() if when else float(entry.mtime)


def sorted_entries(site: Site, entries: Iterable[Entry]) -> list[Entry]:
    """Newest first."""
    return sorted(entries, key=lambda e: (entry_time(site, e), e.name), reverse=True)


def newest_verified(site: Site, entries: Iterable[Entry]) -> Entry | None:
    return next((e for e in sorted_entries(site, entries) if e.verified), None)


def describe_entry(site: Site, entry: Entry, now: int) -> str:
    if entry.actual and entry.actual != entry.checksum:
        state = "CHECKSUM MISMATCH" if entry.checksum else "not verified (no checksum file)"
    elif entry.checksum:
        state = "verified, checksum re-read and matches" if entry.actual else "verified"
    else:
        state = "not verified (no checksum file)"
    return f"{entry.name:<52} {format_size(entry.size):>9}  {format_age(now - entry_time(site, entry)) + ' ago':>10}  {state}"


def describe_timer(service: dict[str, str], timer: dict[str, str]) -> str:
    """One line on the nightly backup: its last result and its next run."""
    if timer.get("LoadState") != "loaded":
        return "nightly: no backup timer on this host (run provision)"
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
    return f"nightly ({state}): {last}" + (f"; next {upcoming}" if upcoming else "")


@task(name="list", help={"verify": "re-read every backup and compare it with its checksum file (reads them all)"})
def list_(c: Context, verify: bool = False) -> None:
    """The site's backups on the host (size, age, verified or not) and the nightly backup's last result."""
    for conn, site in targets(c):
        report = Report("db.list", host_label(conn))
        with report.step("read backups") as step:
            result = run_db(conn, site, ["list"] + (["--hash"] if verify else []))
            if not result.ok:
                raise StepError(script_error(result))
            now, entries, service, timer = parse_list(result.stdout)
            step.note(f"{len(entries)} in {backups_dir(site)}, {format_size(sum(e.size for e in entries))}")
        for entry in sorted_entries(site, entries):
            report.print("  " + describe_entry(site, entry, now))
        report.print("  " + describe_timer(service, timer))
        bad = [e.name for e in entries if e.actual and e.actual != e.checksum and e.checksum]
        if bad:
            raise Exit(f"checksum mismatch: {', '.join(bad)}", code=1)


# ---------------------------------------------------------------- restore and rehearse


def upload_script(site: Site, name: str, sha256: str, as_root: bool) -> str:
    """Finish an upload: private, the deploy user's, the sha256 it had here, stored under its own name."""
    tmp, dest = q(f"{backups_dir(site)}/.{name}.upload"), q(f"{backups_dir(site)}/{name}")
    user = q(site.deploy_user)
    return "\n".join([
        "set -e",
        f"chmod 600 {tmp}",
        f"chown {user}:{user} {tmp}" if as_root else ":",
        f'got=$(sha256sum < {tmp} | cut -c1-64)',
        f'if [ "$got" != {sha256} ]; then rm -f {tmp}; echo "sum-db: damaged in transfer: sha256 $got, the local file has {sha256}" >&2; exit 1; fi',
        f"if [ -e {dest} ]; then",
        f'  rm -f {tmp}; [ "$(sha256sum < {dest} | cut -c1-64)" = {sha256} ] && {{ echo KEPT; exit 0; }}',
        f'  echo "sum-db: a different {name} is already in {backups_dir(site)}: rename the local file" >&2; exit 1',
        "fi",
        f"mv {tmp} {dest}",
        "echo STORED",
    ])


def upload_backup(c: Connection, site: Site, report: Report, local: Path) -> str:
    """Copy a local backup into the host's backups directory, sha256 checked; returns its path there."""
    name = local.name
    if not UPLOAD_NAME_RE.fullmatch(name):
        raise Exit(f"local file name {name!r}: use letters, digits, '.', '_' and '-' only", code=2)
    with report.step(f"upload {name}") as step:
        sha = sha256_file(local)
        c.put(str(local), f"{backups_dir(site)}/.{name}.upload")
        result = run(c, upload_script(site, name, sha, c.user == "root"), warn=True)
        if not result.ok:
            raise StepError(script_error(result))
        step.changed(f"{format_size(local.stat().st_size)}, sha256 matches" + (" (the same file was already there)" if "KEPT" in result.stdout else ""))
    return f"{backups_dir(site)}/{name}"


def locate(c: Connection, site: Site, report: Report, value: str) -> str:
    """The backup's path on the host, uploading it first when `value` is a local file."""
    kind, path = resolve_file(site, value, Path(value).expanduser().is_file())
    if kind == "local":
        return upload_backup(c, site, report, Path(path).expanduser())
    return path


def verify(c: Connection, site: Site, report: Report, path: str) -> dict[str, str]:
    """Read the whole backup on the host before anything is touched: refuse it unless it is whole and complete."""
    with report.step(f"verify {path.rsplit('/', 1)[-1]}") as step:
        result = run_db(c, site, ["verify", path, "--record"])
        info = first(result.stdout, "VERIFIED")
        if not result.ok or info is None:
            raise StepError(f"refused: {script_error(result)}; nothing was touched", "pick another backup with `fab db.list`")
        step.note(f"{format_size(int(info['size']))} in {info['seconds']}s, {verified_text(info)}")
    return info


def running_units(c: Connection, site: Site) -> list[str]:
    units = app_units(site)
    states = run(c, "systemctl is-active " + " ".join(q(u) for u in units), warn=True).stdout.split()
    return [unit for unit, state in zip(units, states) if state in RUNNING]


def bring_back(c: Connection, site: Site, report: Report, units: list[str]) -> None:
    """Start what ran before (again: the script has already, unless the connection broke) and wait for /health/."""
    with report.step("app back up") as step:
        if not units:
            step.note("nothing was running before the restore; nothing started")
            return
        for unit in units:
            result = run(c, f"sudo -n /usr/bin/systemctl start {q(unit)}", warn=True)
            if not result.ok:
                raise StepError(f"could not start {unit}: {script_error(result)}", f"look at `journalctl -u {unit}` on the host")
        live = socket_colour(run(c, f"readlink {q(site.root)}/live.sock", warn=True).stdout)
        # The live colour first: only it gates the restore; a standby that fails only loses its instant rollback.
        for colour in sorted((unit_colour(u) for u in units if unit_colour(u)), key=lambda colour: colour != live):
            health = wait_healthy(c, site, colour_socket(site, colour))
            if health.ok:
                step.note(f"/health/ {health.describe()} on {colour}")
            elif colour == live:
                raise StepError(f"/health/ on {colour}: {health.describe()}", f"look at `journalctl -u {site.unit_prefix}-gunicorn@{colour}` on the host")
            else:
                step.warn(f"/health/ on the standby {colour}: {health.describe()}; a rollback will start its release afresh")
        others = [u for u in units if not unit_colour(u)]
        if others:
            step.note(f"started {', '.join(others)}")


def restore_notes(stdout: str) -> list[str]:
    """What the script did, in order: units stopped, the safety backup, the restore, units started."""
    notes = []
    for tag, rest in records(stdout):
        if tag in ("STOPPED", "STARTED", "START_FAILED"):
            notes.append(f"{tag.lower().replace('_', ' ')} {rest}")
        elif tag == "BACKUP":
            info = fields(rest)
            notes.append(f"safety backup {info['file']} ({format_size(int(info['size']))}, verified)")
        elif tag == "RESTORED":
            notes.append(f"restored in {fields(rest)['seconds']}s, one transaction")
    return notes


def restore_site(c: Connection, site: Site, report: Report, value: str) -> None:
    """Verify, then (app stopped) safety backup and an all-or-nothing restore; the app comes back whatever happens."""
    with site_lock(c, site, "db.restore"):
        path = locate(c, site, report, value)
        verify(c, site, report, path)
        with report.step("find the running app") as step:
            units = running_units(c, site)
            step.note(", ".join(units) if units else "nothing running")
        try:
            with report.step("restore") as step:
                args = ["restore", path, "--verified", "--safety-backup"]
                for unit in units:
                    args += ["--app", unit]
                result = run_db(c, site, args)
                notes = restore_notes(result.stdout)
                if not result.ok or first(result.stdout, "RESTORED") is None:
                    done = f" ({'; '.join(notes)})" if notes else ""
                    raise StepError(script_error(result) + done, "the live database is unchanged; read the error above")
                step.changed("; ".join(notes))
        finally:
            bring_back(c, site, report, units)
        run_hooks(c, site, report, "after_restore", site.root, {"file": path})


@task(
    auto_shortflags=False,
    help={
        "file": "a backup name from `fab db.list`, a path on the server, or a local file (uploaded first)",
        "i_know_this_will_overwrite": "required: the live database is replaced by the backup",
    },
)
def restore(c: Context, file: str = "", i_know_this_will_overwrite: bool = False) -> None:
    """Replace the live database with a backup: verified first, in one transaction, safety backup taken, app restarted."""
    if not i_know_this_will_overwrite:
        raise Exit("db.restore replaces the live database: add --i-know-this-will-overwrite to go ahead", code=2)
    validate_file(file)
    for conn, site in targets(c, destructive=True):
        report = Report("db.restore", host_label(conn))
        restore_site(conn, site, report, file)
        report.summary(f"restored from {file}")


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


def migrate_verdict(stdout: str) -> tuple[bool, str]:
    """Whether the live release's ``migrate --check --plan`` accepts the restored copy, and what to say.

    Unapplied migrations (a backup taken before the release that added them) are not an error:
    a restore of it needs ``migrate``. Anything else (an exception, no connection) is.
    """
    if first(stdout, "MIGRATE") is None and "MIGRATE skipped" not in stdout:
        return False, "no answer from manage.py"
    if "MIGRATE skipped" in stdout:
        return True, "skipped: no release is live (no current/.venv)"
    rc = first(stdout, "MIGRATE").get("rc", "?")
    output = [line for line in stdout.splitlines() if line.strip() and not line.startswith("MIGRATE")]
    if rc == "0":
        return True, "no unapplied migrations"
    if output and output[0].startswith("Planned operations:"):
        planned = [line.strip() for line in output[1:] if not line.startswith(" ")]
        return True, f"{len(planned)} migrations not applied in this backup (a restore of it needs `migrate`): {', '.join(planned[:5])}"
    return False, "\n".join(output[-8:]) or f"exit status {rc}"


def start_unit(c: Connection, unit: str) -> None:
    result = run(c, f"sudo -n /usr/bin/systemctl start {q(unit)}", warn=True)
    if not result.ok:
        raise StepError(f"{unit} failed: {script_error(result)}", f"look at `journalctl -u {unit}` on the host; is the host provisioned with this version?")


def rehearse_site(c: Connection, site: Site, report: Report, value: str = "") -> str:
    """Restore a backup into the scratch database, check it, drop it; returns the backup's path."""
    units = backup_units(site)
    scratch = scratch_db_name(site)
    with site_lock(c, site, "db.rehearse"):
        if value:
            path = locate(c, site, report, value)
        else:
            with report.step("find the newest backup") as step:
                result = run_db(c, site, ["list"])
                entry = newest_verified(site, parse_list(result.stdout)[1]) if result.ok else None
                if entry is None:
                    raise StepError(f"no verified backup in {backups_dir(site)}", "take one with `fab db.backup`")
                path = f"{backups_dir(site)}/{entry.name}"
                step.note(entry.name)
        verify(c, site, report, path)
        with report.step(f"create scratch database {scratch}"):
            start_unit(c, units["scratch_create"])
        try:
            with report.step("restore into the scratch database") as step:
                result = run_db(c, site, ["restore", path, "--db", scratch, "--verified"])
                if not result.ok:
                    raise StepError(script_error(result), "this backup would not restore: take a new one with `fab db.backup`")
                step.note(f"in {(first(result.stdout, 'RESTORED') or {}).get('seconds', '?')}s")
            with report.step("tables and row counts") as step:
                live, copy = (run_db(c, site, ["counts", db]) for db in (site.db_name, scratch))
                if not (live.ok and copy.ok):
                    raise StepError(script_error(live if not live.ok else copy))
                notes, differences = compare_counts(parse_counts(live.stdout), parse_counts(copy.stdout))
                if not parse_counts(copy.stdout):
                    raise StepError("the restored copy has no tables")
                step.note("; ".join(notes))
                if differences:
                    step.warn(f"differs from the live database now (it may have changed since the backup): {'; '.join(differences[:10])}")
            with report.step("migrate --check") as step:
                ok, text = migrate_verdict(run_db(c, site, ["migrate-check", scratch]).stdout)
                if not ok:
                    raise StepError(f"manage.py migrate --check against the restored copy failed:\n{text}")
                step.note(text)
        finally:
            with report.step(f"drop scratch database {scratch}"):
                start_unit(c, units["scratch_drop"])
    return path


@task(help={"file": "the backup to rehearse (name, server path or local file); default: the newest verified backup"})
def rehearse(c: Context, file: str = "") -> None:
    """Restore a backup into a scratch database, check tables, row counts and migrations, drop it; the live site is untouched."""
    if file:
        validate_file(file, "db.rehearse")
    for conn, site in targets(c):
        report = Report("db.rehearse", host_label(conn))
        path = rehearse_site(conn, site, report, file)
        report.summary(f"rehearsal of {path.rsplit('/', 1)[-1]} passed")


# ---------------------------------------------------------------- provision's part


def scratch_unit(site: Site, action: str) -> str:
    """A oneshot unit, run as postgres, that creates or drops the site's scratch database and nothing else."""
    return (
        f"# Managed by sum_tasks for site {site.site_slug}: {action} the rehearsal database {scratch_db_name(site)}\n"
        f"# (owned by role {site.db_name}) for `fab db.rehearse`. The deploy user may start this unit, nothing more.\n"
        "[Unit]\n"
        f"Description=SUM site {site.site_slug}: {action} the rehearsal database\n"
        "After=postgresql.service\n\n"
        "[Service]\n"
        "Type=oneshot\n"
        "User=postgres\n"
        f"ExecStart={script_path(site)} scratch {action}\n"
        "NoNewPrivileges=yes\n"
        "PrivateTmp=yes\n"
        "ProtectSystem=full\n"
    )


def backup_ops(site: Site, project_dir: str = "") -> list[Op]:
    """The backup script, the nightly service and timer (enabled and started), and the scratch database units."""
    from .provision import APT

    units = backup_units(site)
    ctx = {"site": site, "script": script_path(site)}
    system = "/etc/systemd/system"
    reload = "systemctl daemon-reload"
    return [
        Op(
            "backup tools (igzip)", "command -v igzip >/dev/null",
            f"{APT} install isal || {{ {APT} update && {APT} install isal; }}",
            hint="install the isal package (igzip): the fast gzip the backups use",
        ),
        file_op("backup script", script_path(site), db_script(site, project_dir), 0o755),
        file_op("backup service", f"{system}/{units['service']}", render("backup.service.j2", ctx, project_dir), then=reload),
        file_op(
            "backup timer", f"{system}/{units['timer']}", render("backup.timer.j2", ctx, project_dir),
            then=f"{reload} && systemctl try-restart {units['timer']}",
        ),
        file_op("scratch database create unit", f"{system}/{units['scratch_create']}", scratch_unit(site, "create"), then=reload),
        file_op("scratch database drop unit", f"{system}/{units['scratch_drop']}", scratch_unit(site, "drop"), then=reload),
        Op(
            "backup timer enabled and running",
            f"systemctl is-enabled -q {units['timer']} && systemctl is-active -q {units['timer']}",
            f"systemctl enable --now {units['timer']}",
        ),
    ]


def backup_sudo_commands(site: Site) -> list[str]:
    """The deploy user may start the nightly backup now, and create or drop its scratch database: exact commands."""
    from .provision import SYSTEMCTL_PATHS

    units = backup_units(site)
    return [f"{path} start {units[key]}" for path in SYSTEMCTL_PATHS for key in ("service", "scratch_create", "scratch_drop")]


db = Collection("db", backup_task, restore, list_, rehearse)
