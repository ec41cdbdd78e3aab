"""db.*: names, validation, output parsing, the provision plan's part, and the host script run here on stubs."""

import gzip
import os
import re
import shutil
import stat
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from invoke import Config, Context
from invoke.exceptions import Exit
from invoke.runners import Result

from sum_tasks import namespace
from sum_tasks.cli import db as db_tasks
from sum_tasks.commands import backup as db
from sum_tasks.commands import templating
from sum_tasks.commands.facts import Facts
from sum_tasks.commands.script import Script
from sum_tasks.configuration import load_site
from sum_tasks.operations.backups import scratch_unit
from sum_tasks.operations.plan import host_plan

DUMP = textwrap.dedent("""\
    --
    -- PostgreSQL database dump
    --

    \\restrict abc
    SET statement_timeout = 0;
    CREATE TABLE public.t (i integer);
    COPY public.t (i) FROM stdin;
    1
    2
    \\.

    --
    -- PostgreSQL database dump complete
    --

    \\unrestrict abc

""")
PASSWORD = "stub-Password-7d1c0e"
NAME_RE = r"acme-kitchens_db_\d{8}T\d{6}Z(-[a-z0-9-]+)?\.sql\.(gz|zst)"


# ---------------------------------------------------------------- names and validation


def test_scratch_database_name_can_never_be_a_site_database(site_config):
    short = load_site(site_config)
    assert db.scratch_db_name(short) == "rehearse-acme_kitchens"
    long_a = load_site({**site_config, "site_slug": "a" * 60 + "-xy"})
    long_b = load_site({**site_config, "site_slug": "a" * 60 + "-xz"})
    for site in (long_a, long_b):
        name = db.scratch_db_name(site)
        assert len(name.encode()) <= 63 and "-" in name and name != site.db_name
    assert db.scratch_db_name(long_a) != db.scratch_db_name(long_b)


@pytest.mark.parametrize("value,expected", [("", None), ("1", 1), ("14", 14), (" 3 ", 3), (10000, 10000)])
def test_keep_accepts_positive_whole_numbers(value, expected):
    assert db.validate_keep(value) == expected


@pytest.mark.parametrize("value", ["0", "-1", "1.5", "ten", "10001", "3; rm -rf /"])
def test_keep_refuses_anything_else(value):
    with pytest.raises(Exit, match="--keep must be a whole number"):
        db.validate_keep(value)


def test_format_and_label():
    assert db.validate_format("") is None and db.validate_format("zstd") == "zstd"
    with pytest.raises(Exit, match="gzip, zstd"):
        db.validate_format("xz")
    assert db.validate_label("pre-20261126t193000z-abcdef12") == "pre-20261126t193000z-abcdef12"
    for bad in ("Pre", "-x", "a b", "a" * 33, "x;y"):
        with pytest.raises(ValueError):
            db.validate_label(bad)


@pytest.mark.parametrize("value", ["", "-rf", "--help", "a\nb", "a\rb", "a\0b", "tab\there", "x" * 1025])
def test_file_flag_refuses_options_control_characters_and_long_values(value):
    with pytest.raises(Exit):
        db.validate_file(value)


def test_file_resolution(site):
    assert db.resolve_file(site, "acme-kitchens_db_20261126T031500Z.sql.gz", False) == (
        "server", "/srv/sum/acme-kitchens/backups/acme-kitchens_db_20261126T031500Z.sql.gz")
    assert db.resolve_file(site, "/var/tmp/x.sql.gz", False) == ("server", "/var/tmp/x.sql.gz")
    assert db.resolve_file(site, "backups/x.sql.gz", True) == ("local", "backups/x.sql.gz")
    with pytest.raises(Exit, match="must be absolute"):
        db.resolve_file(site, "backups/x.sql.gz", False)


def test_backup_names_parse_to_utc_times(site):
    when = db.parse_backup_time(site, "acme-kitchens_db_20261126T031500Z.sql.gz")
    assert when is not None and when.isoformat() == "2026-11-26T03:15:00+00:00"
    assert db.parse_backup_time(site, "acme-kitchens_db_20261126T031500Z-pre-restore.sql.zst") is not None
    for other in ("other_db_20261126T031500Z.sql.gz", "acme-kitchens_db_2026.sql.gz", "acme-kitchens_db_20261126T031500Z.sql"):
        assert db.parse_backup_time(site, other) is None


def test_app_units_and_colours(site_config):
    site = load_site({**site_config, "celery": True})
    assert site.paths.app_units() == [f"sum-acme-kitchens-gunicorn@{c}.service" for c in ("blue", "green", "amber")] + [
        "sum-acme-kitchens-celery.service"]
    assert [site.paths.unit_colour(u) for u in site.paths.app_units()] == ["blue", "green", "amber", ""]


# ---------------------------------------------------------------- output parsing


def result(stdout="", stderr="", exited=0):
    return Result(stdout=stdout, stderr=stderr, exited=exited)


def test_result_lines_and_errors():
    out = "VERIFIED format=gzip size=10 sha256=ab seconds=0.10\nsome noise\nSTOPPED sum-x-gunicorn@blue.service\n"
    assert db.first(out, "VERIFIED") == {"format": "gzip", "size": "10", "sha256": "ab", "seconds": "0.10"}
    assert db.first(out, "BACKUP") is None
    assert ("STOPPED", "sum-x-gunicorn@blue.service") in db.records(out)
    assert db.script_error(result(stderr="psql: noise\nsum-db: x.gz is empty\n", exited=1)) == "x.gz is empty"
    assert db.script_error(result(stderr="boom\n", exited=1)) == "boom"
    assert db.script_error(result(exited=7)) == "exit status 7"


def test_restore_notes_name_the_safety_backup():
    out = ("STOPPED sum-x-gunicorn@blue.service\nVERIFIED format=gzip size=5 sha256=aa seconds=0.1\n"
           "BACKUP file=/srv/sum/x/backups/x_db_20261126T031500Z-pre-restore.sql.gz size=2000000 sha256=aa format=gzip "
           "dump_seconds=1 verify_seconds=1\nRESTORED db=x seconds=3.20\nSTARTED sum-x-gunicorn@blue.service\n")
    assert db.restore_notes(out) == [
        "stopped sum-x-gunicorn@blue.service",
        "safety backup /srv/sum/x/backups/x_db_20261126T031500Z-pre-restore.sql.gz (2.0 MB, verified)",
        "restored in 3.20s, one transaction",
        "started sum-x-gunicorn@blue.service",
    ]


LIST = """\
@@now
1795721573
@@files
acme-kitchens_db_20261126T031500Z.sql.gz\t195000000\t1795713300\t{a}\t-
acme-kitchens_db_20261127T031500Z.sql.gz\t1000\t1795713300\t-\t-
acme-kitchens_db_20261125T031500Z-pre-restore.sql.zst\t157000000\t1795713300\t{b}\t-
old-runbook.sql.gz\t5\t1795000000\t-\t-
@@service
LoadState=loaded
ActiveState=inactive
Result=success
ExecMainStatus=0
ExecMainStartTimestamp=Thu 2026-11-26 03:15:00 UTC
ExecMainExitTimestamp=Thu 2026-11-26 03:15:04 UTC
@@timer
LoadState=loaded
ActiveState=active
UnitFileState=enabled
LastTriggerUSec=Thu 2026-11-26 03:15:00 UTC
NextElapseUSecRealtime=Fri 2026-11-27 03:15:00 UTC
""".format(a="a" * 64, b="b" * 64)


def test_list_output(site):
    now, entries, service, timer = db.parse_list(LIST)
    assert now == 1795721573 and len(entries) == 4
    ordered = [e.name for e in db.sorted_entries(site, entries)]
    assert ordered[:3] == ["acme-kitchens_db_20261127T031500Z.sql.gz", "acme-kitchens_db_20261126T031500Z.sql.gz",
                           "acme-kitchens_db_20261125T031500Z-pre-restore.sql.zst"]
    assert db.newest_verified(site, entries).name == "acme-kitchens_db_20261126T031500Z.sql.gz"
    lines = {e.name: db.describe_entry(site, e, now) for e in entries}
    assert re.search(r"195\.0 MB\s+16h 17m ago\s+verified$", lines["acme-kitchens_db_20261126T031500Z.sql.gz"])
    assert lines["acme-kitchens_db_20261127T031500Z.sql.gz"].endswith("not verified (no checksum file)")
    assert db.describe_timer(service, timer) == (
        "nightly (enabled): last run Thu 2026-11-26 03:15:04 UTC: succeeded; next Fri 2026-11-27 03:15:00 UTC")


def test_list_with_rehash_flags_mismatches(site):
    entry = db.Entry("acme-kitchens_db_20261126T031500Z.sql.gz", 10, 0, "a" * 64, "c" * 64)
    assert not entry.verified and db.describe_entry(site, entry, 0).endswith("CHECKSUM MISMATCH")
    good = db.Entry(entry.name, 10, 0, "a" * 64, "a" * 64)
    assert good.verified and db.describe_entry(site, good, 0).endswith("verified, checksum re-read and matches")


def test_timer_states():
    assert db.describe_timer({}, {"LoadState": "not-found"}) == "nightly: no timer on this host (run provision)"
    timer = {"LoadState": "loaded", "ActiveState": "active", "UnitFileState": "enabled"}
    assert db.describe_timer({"ActiveState": "inactive"}, timer) == "nightly (enabled): has not run yet"
    failed = {"ExecMainExitTimestamp": "Thu 2026-11-26 03:15:04 UTC", "Result": "exit-code", "ExecMainStatus": "1"}
    assert "FAILED (exit-code, exit status 1)" in db.describe_timer(failed, timer)
    assert "NOT running (disabled, inactive)" in db.describe_timer({}, {"LoadState": "loaded", "ActiveState": "inactive",
                                                                      "UnitFileState": "disabled"})


def test_sizes_and_ages():
    assert [db.format_size(n) for n in (5, 1500, 195_000_000, 2_500_000_000_000)] == ["5 B", "1.5 KB", "195.0 MB", "2500.0 GB"]
    assert [db.format_age(s) for s in (-3, 42, 125, 3 * 3600 + 60, 2 * 86400 + 4 * 3600)] == ["0s", "42s", "2m", "3h 01m", "2d 4h"]


def test_row_counts_compared_with_live():
    notes, differences = db.compare_counts({"public.a": 3, "public.b": 5}, {"public.a": 3, "public.b": 5})
    assert notes == ["2 tables, 8 rows", "the same tables and row counts as the live database"] and differences == []
    _, differences = db.compare_counts({"public.a": 4, "public.new": 1}, {"public.a": 3, "public.gone": 2})
    assert differences == ["public.a: 3 restored, 4 live", "public.gone: only in the backup", "public.new: only live"]
    assert db.parse_counts("public.a\t3\npublic.b\t0\nnoise\n") == {"public.a": 3, "public.b": 0}


def test_migrate_verdicts():
    """The script judges (`verdict=`); these say what its verdict means, from its ``@@migrate`` section."""
    assert db.migrate_verdict("MIGRATE verdict=skipped\n") == (True, "skipped: no release is live (no current/.venv)")
    assert db.migrate_verdict("  No planned migration operations.\nMIGRATE rc=0 verdict=ok pending=0\n") == (True, "no unapplied migrations")
    ok, text = db.migrate_verdict("notes.0002_note_pinned\nMIGRATE rc=1 verdict=pending pending=1\n")
    assert ok and text.startswith("1 migrations not applied") and "notes.0002_note_pinned" in text
    ok, text = db.migrate_verdict('Traceback (most recent call last):\n  ...\nrelation "django_migrations" does not exist\n'
                                  "MIGRATE rc=1 verdict=failed pending=0\n")
    assert not ok and "django_migrations" in text
    assert db.migrate_verdict("") == (False, "no answer from manage.py")


# ---------------------------------------------------------------- tasks refuse before connecting


def context(**sum_config):
    return Context(Config(overrides={"sum": {"site_slug": "acme", "domains": ["acme.example"], "project_module": "acme", **sum_config}}))


def test_restore_refuses_without_the_flag_before_anything_else():
    with pytest.raises(Exit, match="add --i-know-this-will-overwrite") as err:
        db_tasks.restore(context(hosts=["db.example"]), file="x.sql.gz")
    assert err.value.code == 2


@pytest.mark.parametrize("hosts", [["localhost"], ["127.0.0.1"], ["root@127.0.0.1:2222"]])
def test_restore_refuses_the_local_machine(hosts):
    with pytest.raises(Exit, match="refusing a destructive task against this machine"):
        db_tasks.restore(context(hosts=hosts), file="x.sql.gz", i_know_this_will_overwrite=True)


def test_restore_without_any_host_runs_nothing_here():
    with pytest.raises(Exit, match="no target host"):
        db_tasks.restore(context(), file="x.sql.gz", i_know_this_will_overwrite=True)


def test_bad_flags_stop_before_connecting():
    with pytest.raises(Exit, match="--keep"):
        db_tasks.backup_task(context(hosts=["db.example"]), keep="0")
    with pytest.raises(Exit, match="--format"):
        db_tasks.backup_task(context(hosts=["db.example"]), format="bzip2")
    with pytest.raises(Exit, match="--file"):
        db_tasks.restore(context(hosts=["db.example"]), file="-x", i_know_this_will_overwrite=True)
    with pytest.raises(Exit, match="--file"):
        db_tasks.rehearse(context(hosts=["db.example"]), file="a\nb")


def test_task_names_and_flags():
    ns = namespace()
    assert {"db.backup", "db.restore", "db.list", "db.rehearse"} <= set(ns.task_names)
    restore = ns.collections["db"]["restore"]
    flags = {name for arg in restore.get_arguments() for name in arg.names}
    assert "i-know-this-will-overwrite" in flags and "file" in flags and "i" not in flags and "f" not in flags
    backup = ns.collections["db"]["backup"]
    assert {"keep", "download", "format", "to"} <= {name for arg in backup.get_arguments() for name in arg.names}


# ---------------------------------------------------------------- provision's part


def by_name(ops):
    return {op.name: op for op in ops}


def test_provision_installs_script_units_and_timer(site):
    ops = by_name(host_plan(site, Facts(user="root")))
    names = list(ops)
    assert names.index("units enabled") < names.index("backup script") < names.index("backup timer enabled and running")
    script = ops["backup script"]
    assert "/usr/local/bin/sum-acme-kitchens-db.sum-new" in script.apply and "755 root root" in script.check
    service = ops["backup service"].stdin.decode()
    assert "User=deploy" in service and "Type=oneshot" in service
    assert "ExecStart=/usr/local/bin/sum-acme-kitchens-db backup --format gzip --keep 14" in service
    timer = ops["backup timer"].stdin.decode()
    assert "OnCalendar=*-*-* 03:15:00" in timer and "Persistent=true" in timer and "WantedBy=timers.target" in timer
    assert "systemctl enable --now sum-acme-kitchens-backup.timer" in ops["backup timer enabled and running"].apply
    create = ops["scratch database create unit"].stdin.decode()
    assert "User=postgres" in create and "ExecStart=/usr/local/bin/sum-acme-kitchens-db scratch create" in create


def test_sudo_rules_add_exact_backup_and_scratch_starts(site):
    added = [c for c in site.paths.sudo_commands() if c.endswith(("-backup.service", "-scratchdb-create.service", "-scratchdb-drop.service"))]
    assert "/usr/bin/systemctl start sum-acme-kitchens-backup.service" in added
    assert "/usr/bin/systemctl start sum-acme-kitchens-scratchdb-drop.service" in added
    assert len(added) == 6
    assert all(re.fullmatch(r"/(usr/)?bin/systemctl start sum-acme-kitchens-(backup|scratchdb-create|scratchdb-drop)\.service", c) for c in added)


def test_config_changes_reach_the_units(site_config):
    site = load_site({**site_config, "backups": {"keep": 3, "format": "zstd", "schedule": "*-*-* 01:00:00"}})
    ops = by_name(host_plan(site, Facts(user="root")))
    assert b"backup --format zstd --keep 3" in ops["backup service"].stdin
    assert b"OnCalendar=*-*-* 01:00:00" in ops["backup timer"].stdin
    assert b"DEFAULT_KEEP=3" in ops["backup script"].stdin


def test_units_pass_systemd_analyze_verify(tmp_path, site):
    if not shutil.which("systemd-analyze"):
        pytest.fail("systemd-analyze is needed (apt-get install systemd)")
    ctx = {"site": site, "script": site.paths.backup_script}
    units = {
        "sum-acme-kitchens-backup.service": templating.render("backup.service.j2", ctx),
        "sum-acme-kitchens-backup.timer": templating.render("backup.timer.j2", ctx),
        "sum-acme-kitchens-scratchdb-create.service": scratch_unit(site, "create"),
        "sum-acme-kitchens-scratchdb-drop.service": scratch_unit(site, "drop"),
    }
    for name, text in units.items():
        (tmp_path / name).write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", *(str(tmp_path / n) for n in units)],
                            capture_output=True, text=True, check=False)
    problems = [line for line in result.stderr.splitlines() if "acme-kitchens" in line and "is not executable" not in line
                and "No such file" not in line]
    assert not problems, result.stderr


def test_upload_script_checks_the_transfer(site):
    script = db.upload_script(site, "x.sql.gz", "f" * 64, as_root=True).text
    assert "chown deploy:deploy /srv/sum/acme-kitchens/backups/.x.sql.gz.upload" in script
    assert "mv /srv/sum/acme-kitchens/backups/.x.sql.gz.upload /srv/sum/acme-kitchens/backups/x.sql.gz" in script
    assert "chown" not in db.upload_script(site, "x.sql.gz", "f" * 64, as_root=False).text


# ---------------------------------------------------------------- the host script, run here on stubs

STUBS = {
    "pg_dump": """\
        printf '%s\\n' "$@" > "$STUB/pg_dump.argv"
        printf '%s' "${PGPASSWORD:-}" > "$STUB/pg_dump.password"
        cat "$STUB/dump"
        exit "$(cat "$STUB/dump.rc" 2>/dev/null || echo 0)"
    """,
    "psql": """\
        printf '%s\\n' "$@" >> "$STUB/psql.argv"
        db="" prev=""
        for a in "$@"; do if [ "$prev" = -d ]; then db=$a; fi; prev=$a; done
        if printf '%s\\n' "$@" | grep -qx -- -c; then cat "$STUB/counts.$db" 2>/dev/null; exit 0; fi
        cat > "$STUB/psql.stdin"
        exit "$(cat "$STUB/psql.rc" 2>/dev/null || echo 0)"
    """,
    "systemctl": """\
        if [ "$1" = is-active ]; then grep -qx "$2" "$STUB/active" 2>/dev/null && echo active || { echo inactive; exit 3; }; fi
    """,
    "sudo": """\
        echo "$*" >> "$STUB/sudo.log"
        if grep -qxF -- "$*" "$STUB/sudo.fail" 2>/dev/null; then echo "Job failed" >&2; exit 1; fi
        if grep -qxF -- "$*" "$STUB/sudo.slow" 2>/dev/null; then touch "$STUB/sudo.waiting"; sleep 30 || true; fi
    """,
}


def need_tools():
    missing = [t for t in ("bash", "gzip", "zstd", "sha256sum", "flock") if not shutil.which(t)]
    if missing:
        pytest.fail(f"the db script tests need {', '.join(missing)} (apt-get install gzip zstd util-linux)")


class Host:
    """The rendered script with a site root, .env and stubbed pg_dump, psql, systemctl and sudo, all in tmp_path."""

    def __init__(self, tmp_path: Path, site) -> None:
        need_tools()
        self.root, self.stub = tmp_path / "site", tmp_path / "stub"
        self.backups = self.root / "backups"
        self.backups.mkdir(parents=True)
        self.stub.mkdir()
        (self.root / ".env").write_text(
            f"DJANGO_DB_NAME=acme_kitchens\nDJANGO_DB_USER=acme_kitchens\nDJANGO_DB_PASSWORD={PASSWORD}\n"
            "DJANGO_DB_HOST=127.0.0.1\nDJANGO_DB_PORT=5432\n")
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        for name, body in STUBS.items():
            path = bin_dir / name
            path.write_text("#!/bin/bash\n" + textwrap.dedent(body))
            path.chmod(0o755)
        self.script = tmp_path / "sum-db"
        self.script.write_text(db.script_text(site, root=str(self.root)))
        self.env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "STUB": str(self.stub)}
        self.dump(DUMP)

    def dump(self, text: str, rc: int = 0) -> None:
        (self.stub / "dump").write_text(text)
        (self.stub / "dump.rc").write_text(str(rc))

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(self.script), *args], env=self.env, capture_output=True, text=True, timeout=60, check=False)

    def files(self) -> list[str]:
        return sorted(p.name for p in self.backups.iterdir() if p.name != ".backup.lock")

    def backup_file(self, name: str, text: str = DUMP, sidecar: bool = True) -> Path:
        path = self.backups / name
        path.write_bytes(gzip.compress(text.encode()))
        if sidecar:
            out = subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True).stdout
            (self.backups / f"{name}.sha256").write_text(f"{out.split()[0]}  {name}\n")
        return path


@pytest.fixture
def host(tmp_path, site):
    return Host(tmp_path, site)


@pytest.mark.parametrize("fmt,ext", [("gzip", "gz"), ("zstd", "zst")])
def test_backup_is_verified_checksummed_private_and_password_free(host, fmt, ext):
    out = host.run("backup", "--format", fmt, "--keep", "5")
    assert out.returncode == 0, out.stderr
    info = db.first(out.stdout, "BACKUP")
    path = Path(info["file"])
    assert re.fullmatch(NAME_RE, path.name) and path.suffix == f".{ext}" and path.parent == host.backups
    assert host.files() == [path.name, path.name + ".sha256"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    sha = subprocess.run(["sha256sum", path.name], cwd=host.backups, capture_output=True, text=True, check=True).stdout
    assert (host.backups / f"{path.name}.sha256").read_text() == sha
    assert subprocess.run(["sha256sum", "-c", f"{path.name}.sha256"], cwd=host.backups, capture_output=True, check=False).returncode == 0
    argv = (host.stub / "pg_dump.argv").read_text().split("\n")
    assert argv[:5] == ["--format=plain", "--no-owner", "--no-privileges", "--clean", "--if-exists"]
    assert PASSWORD not in (host.stub / "pg_dump.argv").read_text() + out.stdout + out.stderr
    assert (host.stub / "pg_dump.password").read_text() == PASSWORD
    assert info["format"] == fmt and int(info["size"]) == path.stat().st_size


@pytest.mark.parametrize("dump,rc,error", [
    (DUMP[:60], 1, "pg_dump failed, no backup was written"),
    (DUMP[:120], 0, "is not a complete pg_dump dump"),
])
def test_a_failed_dump_leaves_nothing_that_looks_complete(host, dump, rc, error):
    earlier = host.backup_file("acme-kitchens_db_20260101T000000Z.sql.gz")
    host.dump(dump, rc)
    out = host.run("backup")
    assert out.returncode != 0 and error in out.stderr
    assert host.files() == [earlier.name, earlier.name + ".sha256"]


def test_retention_keeps_n_newest_and_the_newest_verified(host):
    names = [f"acme-kitchens_db_2026010{d}T000000Z.sql.gz" for d in range(1, 5)]
    for name in names:
        host.backup_file(name)
    (host.backups / "notes.txt").write_text("not a backup")
    (host.backups / "orphan.sql.gz.sha256").write_text("x")
    out = host.run("backup", "--keep", "2")
    assert out.returncode == 0, out.stderr
    new = Path(db.first(out.stdout, "BACKUP")["file"]).name
    assert [n for n in host.files() if not n.endswith(".sha256")] == sorted([names[3], new, "notes.txt"])
    assert {f"PRUNED {names[i]}" for i in (0, 1, 2)} == {line for line in out.stdout.splitlines() if line.startswith("PRUNED")}
    assert "orphan.sql.gz.sha256" not in host.files()


def test_retention_never_prunes_the_newest_verified_backup(host):
    # Unverified files named in the future (a clock that was wrong) outrank the new backup by name.
    future = [f"acme-kitchens_db_2099010{d}T000000Z.sql.gz" for d in range(1, 4)]
    for name in future:
        host.backup_file(name, sidecar=False)
    out = host.run("backup", "--keep", "2")
    assert out.returncode == 0, out.stderr
    new = Path(db.first(out.stdout, "BACKUP")["file"]).name
    assert [n for n in host.files() if not n.endswith(".sha256")] == sorted([future[1], future[2], new])


def test_keep_zero_prunes_nothing(host):
    for d in range(1, 4):
        host.backup_file(f"acme-kitchens_db_2026010{d}T000000Z.sql.gz")
    out = host.run("backup", "--keep", "0", "--label", "pre-restore")
    assert out.returncode == 0 and "PRUNED" not in out.stdout
    assert re.search(r"_db_\d{8}T\d{6}Z-pre-restore\.sql\.gz$", db.first(out.stdout, "BACKUP")["file"])
    assert len([n for n in host.files() if n.endswith(".gz")]) == 4


def corrupt_variants(path: Path) -> dict[str, bytes]:
    data = path.read_bytes()
    middle = bytearray(data)
    middle[len(data) // 2: len(data) // 2 + 16] = os.urandom(16)
    return {
        "truncated": data[: len(data) // 2],
        "garbage in the middle": bytes(middle),
        "empty": b"",
        "not gzip": b"SELECT 1;\n" * 100,
        "cut before compression": gzip.compress(DUMP[:150].encode()),
    }


def test_verify_refuses_every_broken_file(host):
    good = host.backup_file("acme-kitchens_db_20260101T000000Z.sql.gz", DUMP * 50, sidecar=False)
    out = host.run("verify", str(good))
    assert out.returncode == 0 and db.first(out.stdout, "VERIFIED")["format"] == "gzip"
    expected = {"truncated": "corrupt or truncated", "garbage in the middle": "corrupt or truncated", "empty": "is empty",
                "not gzip": "neither gzip nor zstd", "cut before compression": "not a complete pg_dump dump"}
    for case, data in corrupt_variants(good).items():
        bad = host.backups / "bad.sql.gz"
        bad.write_bytes(data)
        out = host.run("verify", str(bad))
        assert out.returncode != 0 and expected[case] in out.stderr, (case, out.stderr)


def test_verify_checks_the_checksum_file_and_records_one(host):
    path = host.backup_file("acme-kitchens_db_20260101T000000Z.sql.gz")
    assert host.run("verify", str(path)).returncode == 0
    (host.backups / f"{path.name}.sha256").write_text("0" * 64 + f"  {path.name}\n")
    out = host.run("verify", str(path))
    assert out.returncode != 0 and "does not match its checksum file" in out.stderr
    (host.backups / f"{path.name}.sha256").unlink()
    assert host.run("verify", str(path), "--record").returncode == 0
    assert (host.backups / f"{path.name}.sha256").exists()


def test_restore_streams_one_transaction_and_commits_only_a_whole_stream(host):
    good = host.backup_file("acme-kitchens_db_20260101T000000Z.sql.gz")
    out = host.run("restore", str(good))
    assert out.returncode == 0, out.stderr
    sent = (host.stub / "psql.stdin").read_text()
    assert sent.startswith("SET client_min_messages = warning;\nSET lock_timeout = '60s';\nBEGIN;\n")
    assert "DROP OWNED BY CURRENT_USER;" in sent and sent.endswith("\nCOMMIT;\n") and DUMP in sent
    assert "ON_ERROR_STOP=1" in (host.stub / "psql.argv").read_text()
    # Forced past verification, a broken stream reaches psql without COMMIT: PostgreSQL rolls back.
    truncated = host.backups / "cut.sql.gz"
    whole = gzip.compress((DUMP * 2000).encode())
    truncated.write_bytes(whole[: len(whole) // 2])
    out = host.run("restore", str(truncated), "--verified")
    assert out.returncode != 0 and "failed and was rolled back" in out.stderr
    assert "COMMIT;" not in (host.stub / "psql.stdin").read_text()
    (host.stub / "psql.rc").write_text("3")
    out = host.run("restore", str(good))
    assert out.returncode != 0 and "failed and was rolled back" in out.stderr


def test_restore_refuses_a_broken_file_before_stopping_anything(host):
    bad = host.backups / "bad.sql.gz"
    bad.write_bytes(b"\x1f\x8b" + b"junk" * 10)
    (host.stub / "active").write_text("sum-acme-kitchens-gunicorn@blue.service\n")
    out = host.run("restore", str(bad), "--safety-backup", "--app", "sum-acme-kitchens-gunicorn@blue.service")
    assert out.returncode != 0 and "corrupt or truncated" in out.stderr
    assert not (host.stub / "sudo.log").exists() and not (host.stub / "psql.stdin").exists()


@pytest.mark.parametrize("psql_rc", [0, 3])
def test_restore_stops_running_units_and_starts_them_whatever_happens(host, psql_rc):
    good = host.backup_file("acme-kitchens_db_20260101T000000Z.sql.gz")
    (host.stub / "active").write_text("sum-acme-kitchens-gunicorn@green.service\nsum-acme-kitchens-celery.service\n")
    (host.stub / "psql.rc").write_text(str(psql_rc))
    units = ["sum-acme-kitchens-gunicorn@blue.service", "sum-acme-kitchens-gunicorn@green.service", "sum-acme-kitchens-celery.service"]
    out = host.run("restore", str(good), "--verified", "--safety-backup", *[a for u in units for a in ("--app", u)])
    assert (out.returncode == 0) == (psql_rc == 0), out.stderr
    assert (host.stub / "sudo.log").read_text().splitlines() == [
        "-n /usr/bin/systemctl stop sum-acme-kitchens-gunicorn@green.service",
        "-n /usr/bin/systemctl stop sum-acme-kitchens-celery.service",
        "-n /usr/bin/systemctl start sum-acme-kitchens-gunicorn@green.service",
        "-n /usr/bin/systemctl start sum-acme-kitchens-celery.service",
    ]
    safety = db.first(out.stdout, "BACKUP")["file"]
    assert safety.endswith("-pre-restore.sql.gz") and Path(safety).exists()
    tags = [t for t, _ in db.records(out.stdout)]
    assert tags.index("STOPPED") < tags.index("BACKUP") < tags.index("STARTED")


def test_restore_refuses_units_of_other_sites(host):
    good = host.backup_file("acme-kitchens_db_20260101T000000Z.sql.gz")
    out = host.run("restore", str(good), "--app", "caddy.service")
    assert out.returncode != 0 and "not a unit of this site" in out.stderr


def test_list_reports_files_and_rehashes_on_request(host, site):
    path = host.backup_file("acme-kitchens_db_20260101T000000Z.sql.gz")
    host.backup_file("acme-kitchens_db_20260102T000000Z.sql.gz", sidecar=False)
    out = host.run("list")
    now, entries, _, _ = db.parse_list(out.stdout)
    assert abs(now - time.time()) < 60
    assert {e.name: e.verified for e in entries} == {path.name: True, "acme-kitchens_db_20260102T000000Z.sql.gz": False}
    (host.backups / f"{path.name}.sha256").write_text("0" * 64 + f"  {path.name}\n")
    _, entries, _, _ = db.parse_list(host.run("list", "--hash").stdout)
    assert [e.verified for e in entries if e.name == path.name] == [False]


def test_script_command_quotes_every_argument(site):
    command = Script("backup script", "echo hi", shell="bash", args=("restore", "/srv/x y.sql.gz; rm -rf /", "--app", "u")).command()
    assert command == "bash -c 'echo hi' sum restore '/srv/x y.sql.gz; rm -rf /' --app u"


# ---------------------------------------------------------------- rehearse: the one implementation db.rehearse, offsite.rehearse and the timer run

LIVE_COUNTS = "public.notes_note\t500\npublic.auth_user\t3\n"
MIGRATE_PENDING = "Planned operations:\nnotes.0002_note_pinned\n    Add field pinned to note\nnotes.0003_x\n    Raw SQL operation\n"
CREATE = "-n /usr/bin/systemctl start sum-acme-kitchens-scratchdb-create.service"
DROP = "-n /usr/bin/systemctl start sum-acme-kitchens-scratchdb-drop.service"


def rehearsal_host(host, copy_counts=LIVE_COUNTS, migrate="No planned migration operations.\n", migrate_rc=0, sleep=0):
    """The live release's manage.py as a stub printing `migrate`; the live and restored databases' row counts."""
    app = host.root / "current"
    (app / ".venv" / "bin").mkdir(parents=True)
    (app / "manage.py").write_text("")
    (host.stub / "migrate.out").write_text(migrate)
    python = app / ".venv" / "bin" / "python"
    python.write_text(f'#!/bin/bash\necho "$DJANGO_DB_NAME" > "$STUB/migrate.db"\nsleep {sleep}\ncat "$STUB/migrate.out"\nexit {migrate_rc}\n')
    python.chmod(0o755)
    (host.stub / "counts.acme_kitchens").write_text(LIVE_COUNTS)
    (host.stub / "counts.rehearse-acme_kitchens").write_text(copy_counts)
    return host.backup_file("acme-kitchens_db_20260101T000000Z.sql.gz")


def rendered(site, result) -> tuple[str, str]:
    """`rehearsal_steps`' report of the script's run, and the failure it raised ('' when none)."""
    import io

    from sum_tasks.commands.script import Result as ScriptResult
    from sum_tasks.host.output import Report, StepFailed

    stream = io.StringIO()
    try:
        db_tasks.rehearsal_steps(Report("db.rehearse", "vps", stream), site, ScriptResult(result.returncode, result.stdout, result.stderr))
    except StepFailed as err:
        return stream.getvalue(), f"at step '{err.step}': {err.reason}"
    return stream.getvalue(), ""


def test_rehearse_restores_into_the_scratch_database_checks_it_and_drops_it(host, site):
    good = rehearsal_host(host, copy_counts="public.notes_note\t498\npublic.auth_user\t3\n")
    out = host.run("rehearse", str(good))
    assert out.returncode == 0, out.stderr
    assert (host.stub / "sudo.log").read_text().splitlines() == [CREATE, DROP]
    assert "-d\nrehearse-acme_kitchens\n" in (host.stub / "psql.argv").read_text() and DUMP in (host.stub / "psql.stdin").read_text()
    assert (host.stub / "migrate.db").read_text().strip() == "rehearse-acme_kitchens"
    tags = [t for t, _ in db.records(out.stdout)]
    assert tags == ["VERIFIED", "SCRATCH", "RESTORED", "COUNTED", "MIGRATE", "REHEARSED", "DROPPED"], out.stdout
    assert db.first(out.stdout, "COUNTED") | {"seconds": ""} == {"tables": "2", "rows": "501", "differing": "1", "seconds": ""}
    assert db.first(out.stdout, "MIGRATE") == {"rc": "0", "verdict": "ok", "pending": "0"}
    report, failure = rendered(site, out)
    assert failure == "" and "2 tables, 501 rows" in report and "public.notes_note: 498 restored, 500 live" in report
    assert "no unapplied migrations" in report and "drop scratch database rehearse-acme_kitchens" in report


def test_rehearse_counts_migrations_a_backup_predates_and_passes(host, site):
    good = rehearsal_host(host, migrate=MIGRATE_PENDING, migrate_rc=1)
    out = host.run("rehearse", str(good))
    assert out.returncode == 0, out.stderr
    assert db.first(out.stdout, "MIGRATE") == {"rc": "1", "verdict": "pending", "pending": "2"}
    report, failure = rendered(site, out)
    assert not failure and "2 migrations not applied in this backup" in report and "notes.0002_note_pinned, notes.0003_x" in report


@pytest.mark.parametrize("case,step,reason", [
    ("restore fails", "restore into the scratch database", "failed and was rolled back"),
    ("no tables", "tables and row counts", "the restored copy has no tables"),
    ("migrate fails", "migrate --check", 'relation "django_migrations" does not exist'),
    ("scratch not made", "create scratch database rehearse-acme_kitchens", "could not create the scratch database"),
])
def test_a_failed_rehearsal_drops_the_scratch_database_and_names_its_step(host, site, case, step, reason):
    good = rehearsal_host(host, copy_counts="" if case == "no tables" else LIVE_COUNTS,
                          migrate='Traceback (most recent call last):\nrelation "django_migrations" does not exist\n',
                          migrate_rc=1 if case == "migrate fails" else 0)
    if case == "restore fails":
        (host.stub / "psql.rc").write_text("3")
    if case == "scratch not made":
        (host.stub / "sudo.fail").write_text(CREATE + "\n")
    out = host.run("rehearse", str(good))
    assert out.returncode != 0 and reason in out.stdout + out.stderr, (out.stdout, out.stderr)
    assert (host.stub / "sudo.log").read_text().splitlines() == [CREATE, DROP]
    assert db.first(out.stdout, "DROPPED") == {"db": "rehearse-acme_kitchens"} and db.first(out.stdout, "REHEARSED") is None
    report, failure = rendered(site, out)
    assert f"at step '{step}'" in failure and reason in failure, failure
    assert "drop scratch database rehearse-acme_kitchens" in report


def test_a_broken_backup_is_refused_before_a_scratch_database_is_made(host, site):
    rehearsal_host(host)
    bad = host.backups / "bad.sql.gz"
    bad.write_bytes(b"\x1f\x8b" + b"junk" * 10)
    out = host.run("rehearse", str(bad))
    assert out.returncode != 0 and "corrupt or truncated" in out.stderr
    assert not (host.stub / "sudo.log").exists() and not (host.stub / "psql.stdin").exists()
    report, failure = rendered(site, out)
    assert "at step 'verify'" in failure and "drop scratch" not in report


def test_a_drop_that_fails_fails_the_rehearsal(host, site):
    good = rehearsal_host(host)
    (host.stub / "sudo.fail").write_text(DROP + "\n")
    out = host.run("rehearse", str(good))
    assert out.returncode != 0 and "could not drop rehearse-acme_kitchens" in out.stderr
    assert db.first(out.stdout, "DROP_FAILED") == {"db": "rehearse-acme_kitchens"}
    assert "at step 'drop scratch database rehearse-acme_kitchens'" in rendered(site, out)[1]


@pytest.mark.parametrize("how,status", [("SIGTERM", 143), ("SIGHUP", 129), ("closed connection", 141)])
def test_a_stopped_rehearsal_still_drops_the_scratch_database(host, how, status):
    """systemd stopping the unit (TERM), a task's session hanging up (HUP) or its output closing (the next `say` then
    raises PIPE, which ends bash without its EXIT trap unless trapped) while the scratch database is being made: it is
    dropped all the same."""
    import signal

    good = rehearsal_host(host)
    (host.stub / "sudo.slow").write_text(CREATE + "\n")
    proc = subprocess.Popen(["bash", str(host.script), "rehearse", str(good)], env=host.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not (host.stub / "sudo.waiting").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (host.stub / "sudo.waiting").exists(), "the rehearsal never asked for the scratch database"
    if how == "closed connection":
        proc.stdout.close()
    else:
        proc.send_signal(getattr(signal, how))
    # The stub's sleep ends early; bash acts on the signal, or writes into the closed pipe, once it is back.
    for pid in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=False).stdout.split():
        subprocess.run(["pkill", "-P", pid, "sleep"], check=False)
    proc.wait(timeout=30)
    err = proc.stderr.read()
    assert proc.returncode == status, err
    assert (host.stub / "sudo.log").read_text().splitlines() == [CREATE, DROP], err
