"""fab db.backup, db.restore, db.list, db.rehearse: verified site backups, and restores that change all or nothing.

A site backup is the database dump plus a snapshot of it, media/ and the release ledger in the site's
restic repository on the host, under the dump's name. A restore loads and checks the backup in a
database of its own (and, with its media, stages them beside the live ones) while the site serves;
the app stops only while they take the live ones' place, and what they replaced is kept.

The work on the host is the backup script (``commands/backup.py`` says how it is called and what it
prints); these tasks choose its arguments, run it, and report. They never see the database password.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path

from fabric import Connection
from invoke import Collection, Context, task
from invoke.exceptions import Exit

from ..commands import health
from ..commands.backup import (
    UPLOAD_NAME_RE,
    compare_counts,
    db_script,
    describe_entry,
    describe_timer,
    first,
    format_size,
    migrate_verdict,
    newest_verified,
    parse_backup_time,
    parse_counts,
    parse_list,
    parse_media,
    parse_safety,
    parse_site_check,
    records,
    resolve_file,
    restore_db_name,
    restore_notes,
    running_script,
    safety_db_name,
    safety_note,
    scratch_db_name,
    script_error,
    sorted_entries,
    start_unit_script,
    upload_script,
    validate_file,
    validate_format,
    validate_keep,
    validate_label,
    verified_text,
)
from ..commands.colours import live_socket_script
from ..commands.script import sections
from ..configuration import Site
from ..host.output import Report, StepError, StepFailed
from ..host.runner import Result, host_label, run
from ..host.targets import on_hosts, project_dir, targets
from .hooks import run_hooks
from .lock import site_lock

RUNNING = ("active", "activating", "reloading")


def run_db(c: Connection, site: Site, args: list[str]) -> Result:
    """Run the backup script on the host as the deploy user; never raises on its exit status."""
    return run(c, db_script(site, args, project_dir(c)), as_=site.deploy_user, check=False)


# ---------------------------------------------------------------- backup


@dataclass(frozen=True)
class Backup:
    path: str
    size: int
    sha256: str
    seconds: float


def run_backup(c: Connection, site: Site, report: Report, label: str = "", keep: int | None = None, fmt: str | None = None) -> Backup:
    """Dump, verify, checksum, snapshot with media/ into the site repository, and prune on the host; one report step naming
    the file, its size and time, and its media snapshot."""
    validate_label(label)
    args = ["backup", "--media", "--format", fmt or site.backups.format, "--keep", str(keep or site.backups.keep)]
    if label:
        args += ["--label", label]
    with report.step(f"site backup ({label})" if label else "site backup") as step:
        started = time.monotonic()
        result = run_db(c, site, args)
        info = first(result.stdout, "BACKUP")
        snap = first(result.stdout, "SITE")
        if not result.ok or info is None or snap is None:
            kept = " (the dump is kept, without media)" if info else ""
            raise StepError(script_error(result) + kept, "nothing was replaced; older backups are untouched")
        pruned = [rest for tag, rest in records(result.stdout) if tag == "PRUNED"]
        seconds = time.monotonic() - started
        step.changed(
            f"{info['file']}, {format_size(int(info['size']))} in {seconds:.2f}s "
            f"(dump {info['dump_seconds']}s, verify {info['verify_seconds']}s), {verified_text(info)}"
            + (f"; pruned {len(pruned)} older" if pruned else "")
        )
        step.note(f"media: snapshot {snap['snapshot'][:8]} of the dump, media/ and the release ledger, {snap['files']} files, "
                  f"{format_size(int(snap['bytes']))} ({snap.get('unchanged', '?')} files unchanged, not read again), "
                  f"{format_size(int(snap['added']))} new, in {snap['seconds']}s; site repository checked")
        step.note(safety_note(result.stdout))
    return Backup(info["file"], int(info["size"]), info["sha256"], seconds)


def backup(c: Connection, site: Site, report: Report, label: str = "") -> str:
    """Take a verified site backup now (``release`` calls this before migrating); returns its path on the host."""
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
    if parse_backup_time(site, name) is None:
        raise StepError(f"the host named the backup {name!r}, which is not a backup name of this site: nothing downloaded")
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
    """Back up the site on the host: its database as compressed plain SQL (verified, checksummed), and a snapshot of that
    dump with media/ and the release ledger in the site repository under the dump's name; with retention."""
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


@task(name="list", help={"verify": "re-read every backup and compare it with its checksum file, and all of the site repository's data"})
def list_(c: Context, verify: bool = False) -> None:
    """The site's backups on the host (size, age, verified or not, its media snapshot) and the nightly backup's last result."""
    for conn, site in targets(c):
        report = Report("db.list", host_label(conn))
        with report.step("read backups") as step:
            result = run_db(conn, site, ["list"] + (["--hash"] if verify else []))
            if not result.ok:
                raise StepError(script_error(result))
            now, entries, service, timer = parse_list(result.stdout)
            step.note(f"{len(entries)} in {site.paths.backups}, {format_size(sum(e.size for e in entries))}")
        media, site_check = parse_media(result.stdout), parse_site_check(result.stdout)
        for entry in sorted_entries(site, entries):
            report.print("  " + describe_entry(site, entry, now, media.get(entry.name)))
        report.print("  " + describe_timer(service, timer))
        safety = parse_safety(result.stdout)
        if safety:
            report.print("  " + safety.describe())
        bad = [e.name for e in entries if e.actual and e.actual != e.checksum and e.checksum]
        if site_check is not None:
            ids, why = site_check
            missing = [name for name, m in media.items() if not any(i.startswith(m.snapshot[:8]) for i in ids)]
            bad += [f"{name} (its media snapshot is not in the site repository)" for name in missing]
            if why:
                bad.append(f"the site repository ({why})")
            else:
                report.print(f"  site repository: all data re-read, {len(ids)} snapshot{'' if len(ids) == 1 else 's'}, matches")
        if bad:
            raise Exit(f"checksum mismatch: {', '.join(bad)}", code=1)


# ---------------------------------------------------------------- restore and rehearse


def upload_backup(c: Connection, site: Site, report: Report, local: Path) -> str:
    """Copy a local backup into the host's backups directory, sha256 checked; returns its path there."""
    name = local.name
    if not UPLOAD_NAME_RE.fullmatch(name):
        raise Exit(f"local file name {name!r}: use letters, digits, '.', '_' and '-' only", code=2)
    with report.step(f"upload {name}") as step:
        sha = sha256_file(local)
        c.put(str(local), f"{site.paths.backups}/.{name}.upload")
        result = run(c, upload_script(site, name, sha, c.user == "root"), check=False)
        if not result.ok:
            raise StepError(script_error(result))
        step.changed(f"{format_size(local.stat().st_size)}, sha256 matches" + (" (the same file was already there)" if "KEPT" in result.stdout else ""))
    return f"{site.paths.backups}/{name}"


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
    units = site.paths.app_units()
    states = run(c, running_script(site), check=False).stdout.split()
    return [unit for unit, state in zip(units, states) if state in RUNNING]


def live_colour(c: Connection, site: Site) -> str:
    """The colour Caddy sends traffic to now (what live.sock names), or ''."""
    return health.socket_colour(run(c, live_socket_script(site), check=False).stdout)


def bring_back(c: Connection, site: Site, report: Report, units: list[str]) -> None:
    """Start what ran before (again: the script has already, unless the connection broke) and wait for /health/."""
    with report.step("app back up") as step:
        if not units:
            step.note("nothing was running before the restore; nothing started")
            return
        for unit in units:
            start_unit(c, unit)
        live = live_colour(c, site)
        colour_of = site.paths.unit_colour
        # The live colour first: only it gates the restore; a standby that fails only loses its instant rollback.
        for colour in sorted((colour_of(u) for u in units if colour_of(u)), key=lambda colour: colour != live):
            answer = health.parse_answer(run(c, health.wait(site, site.paths.colour(colour).socket), check=False,
                                             timeout=site.health_timeout + 30).stdout)
            if answer.ok:
                step.note(f"/health/ {answer.describe()} on {colour}")
            elif colour == live:
                raise StepError(f"/health/ on {colour}: {answer.describe()}", f"look at `journalctl -u {site.paths.colour(colour).unit}` on the host")
            else:
                step.warn(f"/health/ on the standby {colour}: {answer.describe()}; a rollback will start its release afresh")
        others = [u for u in units if not colour_of(u)]
        if others:
            step.note(f"started {', '.join(others)}")


def check_copy(c: Connection, site: Site, report: Report, db: str) -> None:
    """A restored copy has tables; its row counts against the live database's (what the restore will change); the live
    release's `migrate --check` accepts it."""
    with report.step("tables and row counts") as step:
        live, copy = (run_db(c, site, ["counts", name]) for name in (site.db_name, db))
        if not (live.ok and copy.ok):
            raise StepError(script_error(live if not live.ok else copy))
        notes, differences = compare_counts(parse_counts(live.stdout), parse_counts(copy.stdout))
        if not parse_counts(copy.stdout):
            raise StepError("the restored copy has no tables")
        step.note("; ".join(notes))
        if differences:
            step.note(f"the restore changes: {'; '.join(differences[:10])}")
    with report.step("migrate --check") as step:
        ok, text = migrate_verdict(sections(run_db(c, site, ["migrate-check", db]).stdout).get("migrate", ""))
        if not ok:
            raise StepError(f"manage.py migrate --check against the restored copy failed:\n{text}")
        step.note(text)


def load_copy(c: Connection, site: Site, report: Report, path: str, db: str, hint: str) -> None:
    """Load a verified backup into `db` (a database of its own, not the live one) in one transaction."""
    with report.step(f"restore into {db}") as step:
        result = run_db(c, site, ["restore", path, "--db", db, "--verified"])
        if not result.ok:
            raise StepError(script_error(result), hint)
        step.note("; ".join(restore_notes(result.stdout)))


def discard_copy(c: Connection, site: Site, report: Report, db: str) -> None:
    """Drop the restored copy and staged media after a failed load or check; a failure here only warns (the next restore
    drops them first)."""
    with report.step(f"drop {db}") as step:
        result = run_db(c, site, ["discard"])
        if not result.ok:
            step.warn(f"{script_error(result)}; the next db.restore drops it first")


def stage_media(c: Connection, site: Site, report: Report, name: str) -> None:
    """A site restore's media, staged beside the live ones by the app's user while the site serves: backup `name`'s from the
    site repository, or (no `name`) those an off-site restore left in recovery/."""
    with report.step("stage the backup's media beside the live ones") as step:
        result = run_db(c, site, ["stage-media"] + ([name] if name else []))
        fetched, staged = first(result.stdout, "FETCHED"), first(result.stdout, "STAGED")
        if not result.ok or fetched is None or staged is None:
            raise StepError(script_error(result), "the live database and media were not touched")
        source = f"snapshot {fetched['snapshot'][:8]}" if fetched["snapshot"] != "-" else "the off-site snapshot"
        step.note(f"{fetched['files']} files, {format_size(int(fetched['bytes']))} from {source} in {fetched['seconds']}s, "
                  f"staged by {site.paths.app_user} in {staged['seconds']}s")


def restore_site(c: Connection, site: Site, report: Report, value: str, media: str = "") -> None:
    """Verify, load into a new database and check it (`media`: ``backup``, the backup's media from the site repository, or
    ``staged``, those an off-site restore left in recovery/, staged beside the live ones), all while the site serves; then
    (app stopped) switch them in, health-gated, the old ones back if the app is unhealthy; keep what they replaced."""
    copy, kept = restore_db_name(site), safety_db_name(site)
    with site_lock(c, site, "db.restore"):
        path = locate(c, site, report, value)
        verify(c, site, report, path)
        if media:
            try:
                stage_media(c, site, report, path.rsplit("/", 1)[-1] if media == "backup" else "")
            except BaseException:
                discard_copy(c, site, report, "the staged media")
                raise
        with report.step("find the running app") as step:
            units, live = running_units(c, site), live_colour(c, site)
            step.note(", ".join(units) if units else "nothing running")
        with report.step(f"create database {copy}"):
            start_unit(c, site.paths.restore_create)
        try:
            load_copy(c, site, report, path, copy, "the live database was not touched; pick another backup with `fab db.list`")
            check_copy(c, site, report, copy)
        except BaseException:
            discard_copy(c, site, report, copy)
            raise
        gate = site.paths.colour(live).unit if live else ""
        try:
            with report.step(f"switch {copy} in") as step:
                args = ["switch"] + (["--gate", gate] if gate in units else []) + (["--media"] if media else [])
                for unit in units:
                    args += ["--app", unit]
                result = run_db(c, site, args)
                notes = restore_notes(result.stdout)
                if not result.ok or first(result.stdout, "SWITCHED") is None or first(result.stdout, "SWITCHED_BACK"):
                    done = f" ({'; '.join(notes)})" if notes else ""
                    raise StepError(script_error(result) + done, "read the error above; `fab db.list` shows the backups")
                step.changed("; ".join(notes))
        except BaseException:
            # The app comes back (the script has started it already, unless the connection broke); the switch's own
            # failure is the one to report, whatever /health/ says now.
            try:
                bring_back(c, site, report, units)
            except StepFailed as err:
                report.print(f"  app back up: {err.reason}")
            raise
        bring_back(c, site, report, units)
        with report.step(f"safety backup of {kept}") as step:
            result = run_db(c, site, ["backup", "--db", kept, "--label", "pre-restore", "--keep", "0"])
            if result.ok and first(result.stdout, "BACKUP"):
                step.changed("; ".join(restore_notes(result.stdout)) + "; the database itself stays until the next good backup")
            else:
                step.warn(f"{script_error(result)}; the replaced database stays as {kept} until the next good backup")
        run_hooks(c, site, report, "after_restore", site.paths.root, {"file": path})


@task(
    auto_shortflags=False,
    help={
        "file": "a backup name from `fab db.list`, a path on the server, or a local file (uploaded first)",
        "with_media": "also bring back the media of that site backup (a name from `fab db.list` with `+ media`), switched in "
                      "together with the database",
        "i_know_this_will_overwrite": "required: the live database (with --with-media: and media) is replaced by the backup",
    },
)
def restore(c: Context, file: str = "", with_media: bool = False, i_know_this_will_overwrite: bool = False) -> None:
    """Replace the live database (and media) with a backup: verified, loaded (and staged) beside them while the site serves,
    then switched in together (app stopped only for the switch, health-gated); what they replaced is kept."""
    if not i_know_this_will_overwrite:
        what = "database and media" if with_media else "database"
        raise Exit(f"db.restore replaces the live {what}: add --i-know-this-will-overwrite to go ahead", code=2)
    validate_file(file)
    if with_media and ("/" in file or Path(file).expanduser().is_file()):
        raise Exit("db.restore --with-media takes a backup name from `fab db.list` (a site backup, `+ media`), not a path or a local file",
                   code=2)
    for conn, site in targets(c, destructive=True):
        report = Report("db.restore", host_label(conn))
        restore_site(conn, site, report, file, "backup" if with_media else "")
        report.summary(f"restored {'database and media' if with_media else 'the database'} from {file}")


def start_unit(c: Connection, unit: str) -> None:
    result = run(c, start_unit_script(unit), check=False)
    if not result.ok:
        raise StepError(f"{unit} failed: {script_error(result)}", f"look at `journalctl -u {unit}` on the host; is the host provisioned with this version?")


def rehearse_site(c: Connection, site: Site, report: Report, value: str = "") -> str:
    """Restore a backup into the scratch database, check it, drop it (the backup script's ``rehearse``); returns the backup's path."""
    with site_lock(c, site, "db.rehearse"):
        if value:
            path = locate(c, site, report, value)
        else:
            with report.step("find the newest backup") as step:
                result = run_db(c, site, ["list"])
                entry = newest_verified(site, parse_list(result.stdout)[1]) if result.ok else None
                if entry is None:
                    raise StepError(f"no verified backup in {site.paths.backups}", "take one with `fab db.backup`")
                path = f"{site.paths.backups}/{entry.name}"
                step.note(entry.name)
        with report.step(f"rehearse {path.rsplit('/', 1)[-1]} on the host"):
            result = run_db(c, site, ["rehearse", path])
        rehearsal_steps(report, site, result)
    return path


def rehearsal_steps(report: Report, site: Site, result: Result) -> None:
    """What the backup script's ``rehearse`` did, one step each (see ``commands/backup.py``); the first it did not get
    through fails with its reason. ``offsite.rehearse`` shows its run the same way."""
    out, why = result.stdout, script_error(result)
    scratch = scratch_db_name(site)
    parts = sections(out)
    try:
        with report.step("verify") as step:
            info = first(out, "VERIFIED")
            if info is None:
                raise StepError(f"refused: {why}; nothing was touched", "pick another backup with `fab db.list`")
            step.took(info.get("seconds"))
            step.note(f"{format_size(int(info['size']))}, {verified_text(info)}")
        with report.step(f"create scratch database {scratch}") as step:
            made = first(out, "SCRATCH")
            if made is None:
                raise StepError(why, f"look at `journalctl -u {site.paths.scratch_create}` on the host; is the host provisioned with this version?")
            step.took(made.get("seconds"))
        with report.step("restore into the scratch database") as step:
            restored = first(out, "RESTORED")
            if restored is None:
                raise StepError(why, "this backup would not restore: take a new one with `fab db.backup`")
            step.took(restored.get("seconds"))
            step.note("one transaction")
        with report.step("tables and row counts") as step:
            counted = first(out, "COUNTED")
            if counted is None:
                raise StepError(why)
            step.took(counted.get("seconds"))
            notes, differences = compare_counts(parse_counts(parts.get("live", "")), parse_counts(parts.get("copy", "")))
            step.note("; ".join(notes))
            if differences:
                step.warn(f"differs from the live database now (it may have changed since the backup): {'; '.join(differences[:10])}")
        with report.step("migrate --check") as step:
            ok, text = migrate_verdict(parts.get("migrate", ""))
            step.took((first(parts.get("migrate", ""), "MIGRATE") or {}).get("seconds"))
            if not ok:
                raise StepError(f"manage.py migrate --check against the restored copy failed:\n{text}")
            if first(out, "REHEARSED") is None:
                raise StepError(why)
            step.note(text)
    finally:
        if "scratch" in parts:
            with report.step(f"drop scratch database {scratch}") as step:
                dropped = first(out, "DROPPED")
                if dropped is None:
                    raise StepError(why, f"look at `journalctl -u {site.paths.scratch_drop}` on the host")
                step.took(dropped.get("seconds"))


@task(help={"file": "the backup to rehearse (name, server path or local file); default: the newest verified backup"})
def rehearse(c: Context, file: str = "") -> None:
    """Restore a backup into a scratch database, check tables, row counts and migrations, drop it; the live site is untouched."""
    if file:
        validate_file(file, "db.rehearse")
    for conn, site in targets(c):
        report = Report("db.rehearse", host_label(conn))
        path = rehearse_site(conn, site, report, file)
        report.summary(f"rehearsal of {path.rsplit('/', 1)[-1]} passed")


db = Collection("db", backup_task, restore, list_, rehearse)
