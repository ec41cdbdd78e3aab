"""db.*: names, validation, output parsing, the provision plan's part, and the host script run here on stubs."""

import fcntl
import gzip
import os
import re
import shutil
import signal
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
from sum_tasks.operations.backups import restore_units, scratch_unit
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


@pytest.mark.parametrize("name_of,short", [(db.scratch_db_name, "rehearse-acme_kitchens"), (db.restore_db_name, "restore-acme_kitchens"),
                                           (db.safety_db_name, "acme_kitchens-before-restore")])
def test_derived_database_names_can_never_be_a_site_database(site_config, name_of, short):
    assert name_of(load_site(site_config)) == short
    long_a = load_site({**site_config, "site_slug": "a" * 60 + "-xy"})
    long_b = load_site({**site_config, "site_slug": "a" * 60 + "-xz"})
    for site in (long_a, long_b):
        name = name_of(site)
        assert len(name.encode()) <= 63 and "-" in name and name != site.db_name
    assert name_of(long_a) != name_of(long_b)


def test_the_three_derived_names_never_meet(site_config):
    for slug in ("acme-kitchens", "a" * 60 + "-xy", "restore", "before"):
        site = load_site({**site_config, "site_slug": slug})
        names = {db.scratch_db_name(site), db.restore_db_name(site), db.safety_db_name(site), site.db_name}
        assert len(names) == 4, names


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


def test_restore_notes_name_each_step_of_the_switch():
    out = ("WAITING for /srv/sum/x/backups/.backup.lock (a backup is running)\nSTOPPED sum-x-gunicorn@blue.service\n"
           "SWITCHED live=x kept=x-before-restore copy=restore-x\nSTARTED sum-x-gunicorn@blue.service\n"
           "HEALTHY sum-x-gunicorn@blue.service\nDOWN seconds=1.52\n")
    assert db.restore_notes(out) == [
        "waited for a running backup to finish, the app still serving",
        "stopped sum-x-gunicorn@blue.service",
        "renamed x to x-before-restore and restore-x to x in one transaction",
        "started sum-x-gunicorn@blue.service",
        "/health/ 200 on sum-x-gunicorn@blue.service",
        "app down 1.52s",
    ]
    assert db.restore_notes("SWITCHED_BACK live=x\n") == ["put the old x back"]


def test_restore_notes_name_the_load_and_the_safety_backup():
    out = ("BACKUP file=/srv/sum/x/backups/x_db_20261126T031500Z-pre-restore.sql.gz size=2000000 sha256=aa format=gzip "
           "dump_seconds=1 verify_seconds=1\nRESTORED db=restore-x seconds=3.20\n")
    assert db.restore_notes(out) == [
        "safety backup /srv/sum/x/backups/x_db_20261126T031500Z-pre-restore.sql.gz (2.0 MB, verified)",
        "restored in 3.20s, one transaction",
    ]


def test_a_backup_says_what_became_of_the_safety_database():
    assert db.safety_note("BACKUP file=x\nSAFETY_DROPPED x-before-restore\n") == (
        "dropped x-before-restore, the database the last restore replaced")
    assert db.safety_note("SAFETY_KEPT x-before-restore (a task holds the site lock)\n") == (
        "kept x-before-restore (a task holds the site lock)")
    assert db.safety_note("BACKUP file=x\n") == ""


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


def test_list_names_the_safety_database():
    assert db.parse_safety(LIST) is None
    kept = db.parse_safety(LIST + "@@safety\nacme_kitchens-before-restore\t23400000\tsum_tasks: replaced by db.restore at 2026-12-01 02:00:00Z\n")
    assert kept == db.SafetyDb("acme_kitchens-before-restore", 23400000, "sum_tasks: replaced by db.restore at 2026-12-01 02:00:00Z")
    assert kept.describe() == ("safety database acme_kitchens-before-restore, 23.4 MB: replaced by db.restore at 2026-12-01 02:00:00Z; "
                               "the next good backup drops it")


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
    assert "ExecStart=/usr/local/bin/sum-acme-kitchens-db backup --media --format gzip --keep 14" in service
    timer = ops["backup timer"].stdin.decode()
    assert "OnCalendar=*-*-* 03:15:00" in timer and "Persistent=true" in timer and "WantedBy=timers.target" in timer
    assert "systemctl enable --now sum-acme-kitchens-backup.timer" in ops["backup timer enabled and running"].apply
    create = ops["scratch database create unit"].stdin.decode()
    assert "User=postgres" in create and "ExecStart=/usr/local/bin/sum-acme-kitchens-db scratch create" in create
    for action in ("create", "switch", "back"):
        unit = ops[f"restore database unit sum-acme-kitchens-restoredb-{action}.service"]
        text = unit.stdin.decode()
        assert "/etc/systemd/system/sum-acme-kitchens-restoredb-" + action + ".service" in unit.apply
        assert "User=postgres" in text and "Type=oneshot" in text and "NoNewPrivileges=yes" in text
        assert f"\nExecStart=/usr/local/bin/sum-acme-kitchens-db restoredb {action}\n" in text
    assert "rename acme_kitchens to acme_kitchens-before-restore and restore-acme_kitchens to acme_kitchens" in (
        ops["restore database unit sum-acme-kitchens-restoredb-switch.service"].stdin.decode())


def test_sudo_rules_add_exact_backup_scratch_and_restore_starts(site):
    units = ("backup", "scratchdb-create", "scratchdb-drop", "restoredb-create", "restoredb-switch", "restoredb-back")
    added = [c for c in site.paths.sudo_commands() if c.endswith(tuple(f"-{u}.service" for u in units))]
    assert "/usr/bin/systemctl start sum-acme-kitchens-backup.service" in added
    assert "/usr/bin/systemctl start sum-acme-kitchens-scratchdb-drop.service" in added
    assert "/usr/bin/systemctl start sum-acme-kitchens-restoredb-switch.service" in added
    assert len(added) == 12
    assert all(re.fullmatch(rf"/(usr/)?bin/systemctl start sum-acme-kitchens-({'|'.join(units)})\.service", c) for c in added)


def test_config_changes_reach_the_units(site_config):
    site = load_site({**site_config, "backups": {"keep": 3, "format": "zstd", "schedule": "*-*-* 01:00:00"}})
    ops = by_name(host_plan(site, Facts(user="root")))
    assert b"backup --media --format zstd --keep 3" in ops["backup service"].stdin
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
        **restore_units(site),
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
    # A catalog of one file: $STUB/databases names the databases there are; DROP DATABASE takes one out.
    "psql": """\
        printf '%s\\n' "$@" >> "$STUB/psql.argv"
        db="" prev=""
        for a in "$@"; do if [ "$prev" = -d ]; then db=$a; fi; prev=$a; done
        if printf '%s\\n' "$@" | grep -qx -- -c; then cat "$STUB/counts.$db" 2>/dev/null; exit 0; fi
        cat > "$STUB/psql.stdin"
        db=$(printf '%s\\n' "$@" | sed -n 's/^db=//p' | tail -n 1)
        if grep -q 'count(\\*) FROM pg_database' "$STUB/psql.stdin"; then
            grep -qsxF -- "$db" "$STUB/databases" && echo 1 || echo 0
        elif grep -q pg_database_size "$STUB/psql.stdin"; then
            ! grep -qsxF -- "$db" "$STUB/databases" || printf '%s\\t5000000\\tsum_tasks: replaced by db.restore at 2026-12-01 02:00:00Z\\n' "$db"
        elif grep -q 'DROP DATABASE' "$STUB/psql.stdin" && [ ! -e "$STUB/drop.fails" ]; then
            echo "$db" >> "$STUB/dropped"
            grep -vxF -- "$db" "$STUB/databases" > "$STUB/databases.new" || true
            mv "$STUB/databases.new" "$STUB/databases"
        elif grep -q 'DROP DATABASE' "$STUB/psql.stdin"; then
            echo "ERROR:  must be owner of database $db" >&2
            exit 1
        fi
        exit "$(cat "$STUB/psql.rc" 2>/dev/null || echo 0)"
    """,
    "systemctl": """\
        if [ "$1" = is-active ]; then grep -qx "$2" "$STUB/active" 2>/dev/null && echo active || { echo inactive; exit 3; }; fi
    """,
    # Logs each command; fails the ones listed in $STUB/sudo.fail, as a failed unit does.
    "sudo": """\
        echo "$*" >> "$STUB/sudo.log"
        if grep -qxF -- "$*" "$STUB/sudo.fail" 2>/dev/null; then
            echo "Job for ${*: -1} failed because the control process exited with error code." >&2
            exit 1
        fi
        if grep -qxF -- "$*" "$STUB/sudo.slow" 2>/dev/null; then touch "$STUB/sudo.waiting"; sleep 30 || true; fi
    """,
    "journalctl": """\
        cat "$STUB/journal" 2>/dev/null || true
    """,
    # /health/ on a socket: $STUB/health holds the answer (body, Location, code); a hung app sleeps first.
    "curl": """\
        [ ! -e "$STUB/health.sleep" ] || sleep "$(cat "$STUB/health.sleep")"
        cat "$STUB/health" 2>/dev/null || printf '\\n\\n000'
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
def host(tmp_path, site_config):
    # Two seconds to answer /health/: a test of an unhealthy switch waits that long, not the default 30.
    return Host(tmp_path, load_site({**site_config, "health_timeout": 2}))


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


def test_restore_loads_into_the_database_it_is_given_and_touches_no_unit(host):
    good = host.backup_file("acme-kitchens_db_20260101T000000Z.sql.gz")
    (host.stub / "active").write_text("sum-acme-kitchens-gunicorn@blue.service\n")
    out = host.run("restore", str(good), "--db", "restore-acme_kitchens", "--verified")
    assert out.returncode == 0, out.stderr
    assert db.first(out.stdout, "RESTORED")["db"] == "restore-acme_kitchens"
    assert "-d\nrestore-acme_kitchens\n" in (host.stub / "psql.argv").read_text()
    assert not (host.stub / "sudo.log").exists()


def test_restore_refuses_a_broken_file_before_loading_anything(host):
    bad = host.backups / "bad.sql.gz"
    bad.write_bytes(b"\x1f\x8b" + b"junk" * 10)
    out = host.run("restore", str(bad), "--db", "restore-acme_kitchens")
    assert out.returncode != 0 and "corrupt or truncated" in out.stderr
    assert not (host.stub / "sudo.log").exists() and not (host.stub / "psql.stdin").exists()


UNITS = ["sum-acme-kitchens-gunicorn@blue.service", "sum-acme-kitchens-gunicorn@green.service", "sum-acme-kitchens-celery.service"]
BLUE = UNITS[0]
HEALTHY = '{"status": "ok"}\n\n200'


def switch(host: "Host", *, running=UNITS, copy=True, health=HEALTHY, fail=()) -> subprocess.CompletedProcess:
    """`switch --gate blue --app ...` with `running` units active, the restored copy there or not, /health/ answering
    `health`, and the sudo commands in `fail` failing."""
    (host.stub / "active").write_text("".join(f"{u}\n" for u in running))
    (host.stub / "databases").write_text("acme_kitchens\n" + ("restore-acme_kitchens\n" if copy else ""))
    (host.stub / "health").write_text(health)
    (host.stub / "sudo.fail").write_text("".join(f"-n /usr/bin/systemctl {f}\n" for f in fail))
    return host.run("switch", "--gate", BLUE, *[a for u in UNITS for a in ("--app", u)])


def sudo_log(host: "Host") -> list[str]:
    return [line.removeprefix("-n /usr/bin/systemctl ") for line in (host.stub / "sudo.log").read_text().splitlines()]


def test_switch_stops_the_gate_last_renames_and_starts_the_gate_first(host):
    out = switch(host)
    assert out.returncode == 0, out.stderr
    assert sudo_log(host) == [
        "stop sum-acme-kitchens-gunicorn@green.service",
        "stop sum-acme-kitchens-celery.service",
        f"stop {BLUE}",
        "start sum-acme-kitchens-restoredb-switch.service",
        f"start {BLUE}",
        "start sum-acme-kitchens-celery.service",
        "start sum-acme-kitchens-gunicorn@green.service",
    ]
    tags = [t for t, _ in db.records(out.stdout)]
    assert tags == ["STOPPED", "STOPPED", "STOPPED", "SWITCHED", "STARTED", "HEALTHY", "DOWN", "STARTED", "STARTED"]
    assert db.first(out.stdout, "SWITCHED") == {"live": "acme_kitchens", "kept": "acme_kitchens-before-restore",
                                                "copy": "restore-acme_kitchens"}
    assert float(db.first(out.stdout, "DOWN")["seconds"]) < 5


def test_switch_with_nothing_running_only_renames(host):
    out = switch(host, running=[])
    assert out.returncode == 0, out.stderr
    assert sudo_log(host) == ["start sum-acme-kitchens-restoredb-switch.service"]
    assert [t for t, _ in db.records(out.stdout)] == ["SWITCHED"]


def test_switch_without_a_restored_copy_touches_nothing(host):
    out = switch(host, copy=False)
    assert out.returncode != 0 and "there is no restore-acme_kitchens to switch to" in out.stderr and "nothing was touched" in out.stderr
    assert not (host.stub / "sudo.log").exists()


def test_switch_that_cannot_rename_leaves_the_live_database_and_starts_the_app(host):
    (host.stub / "journal").write_text("ERROR:  database \"acme_kitchens\" is being accessed by other users\n")
    out = switch(host, fail=["start sum-acme-kitchens-restoredb-switch.service"])
    assert out.returncode != 0 and "the live database is unchanged" in out.stderr
    assert "is being accessed by other users" in out.stderr
    assert "start sum-acme-kitchens-restoredb-back.service" not in sudo_log(host)
    assert sudo_log(host)[-3:] == [f"start {BLUE}", "start sum-acme-kitchens-celery.service", "start sum-acme-kitchens-gunicorn@green.service"]
    assert "SWITCHED" not in out.stdout


@pytest.mark.parametrize("case", ["unhealthy", "does not start"])
def test_an_unhealthy_app_after_the_switch_puts_the_old_database_back(host, case):
    if case == "unhealthy":
        out = switch(host, health='{"status": "unhealthy"}\n\n503')
        assert "the app was not healthy on the restored database (/health/ on " + BLUE + ": HTTP 503)" in out.stderr
    else:
        out = switch(host, fail=[f"start {BLUE}"])
        assert f"{BLUE} did not start on the restored database" in out.stderr
    assert out.returncode != 0 and "the old database is back, nothing changed" in out.stderr
    log = sudo_log(host)
    assert log.index("start sum-acme-kitchens-restoredb-switch.service") < log.index("start sum-acme-kitchens-restoredb-back.service")
    # On the way back every unit that ran before is stopped, then started again on the old database, the gate first.
    back = log.index("start sum-acme-kitchens-restoredb-back.service")
    assert log[back + 1:][-3:] == [f"start {BLUE}", "start sum-acme-kitchens-celery.service", "start sum-acme-kitchens-gunicorn@green.service"]
    assert "SWITCHED_BACK" in out.stdout and "HEALTHY" not in out.stdout and "DOWN" not in out.stdout
    assert (host.stub / "dropped").read_text().split() == ["restore-acme_kitchens"]


def test_a_failed_way_back_says_where_each_database_is(host):
    out = switch(host, health='{"status": "unhealthy"}\n\n503', fail=["start sum-acme-kitchens-restoredb-back.service"])
    assert out.returncode != 0
    assert "putting the old database back failed" in out.stderr
    assert "the restored database is live, the old one is acme_kitchens-before-restore" in out.stderr
    assert sudo_log(host)[-1] == "start sum-acme-kitchens-gunicorn@green.service"


def test_switch_goes_on_when_the_ssh_session_hangs_up(host):
    """A dropped connection sends SIGHUP: the switch, its health gate and the starts still run to the end."""
    (host.stub / "active").write_text("".join(f"{u}\n" for u in UNITS))
    (host.stub / "databases").write_text("acme_kitchens\nrestore-acme_kitchens\n")
    (host.stub / "health").write_text(HEALTHY)
    (host.stub / "health.sleep").write_text("1")
    proc = subprocess.Popen(["bash", str(host.script), "switch", "--gate", BLUE, *[a for u in UNITS for a in ("--app", u)]],
                            env=host.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while "restoredb-switch" not in ((host.stub / "sudo.log").read_text() if (host.stub / "sudo.log").exists() else ""):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(signal.SIGHUP)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "HEALTHY" in out and "DOWN" in out and sudo_log(host)[-1] == "start sum-acme-kitchens-gunicorn@green.service"


def test_switch_refuses_units_of_other_sites(host):
    out = host.run("switch", "--app", "caddy.service")
    assert out.returncode != 0 and "not a unit of this site" in out.stderr


def test_a_backup_of_the_live_database_drops_the_safety_database(host):
    (host.stub / "databases").write_text("acme_kitchens\nacme_kitchens-before-restore\n")
    out = host.run("backup")
    assert out.returncode == 0, out.stderr
    assert "SAFETY_DROPPED acme_kitchens-before-restore" in out.stdout
    assert (host.stub / "databases").read_text() == "acme_kitchens\n"
    out = host.run("backup")
    assert "SAFETY_" not in out.stdout


def test_a_backup_of_the_safety_database_keeps_it(host):
    (host.stub / "databases").write_text("acme_kitchens\nacme_kitchens-before-restore\n")
    out = host.run("backup", "--db", "acme_kitchens-before-restore", "--label", "pre-restore", "--keep", "0")
    assert out.returncode == 0, out.stderr
    assert "SAFETY_" not in out.stdout and not (host.stub / "dropped").exists()
    assert db.first(out.stdout, "BACKUP")["file"].endswith("-pre-restore.sql.gz")
    out = host.run("backup", "--db", "no_such_db")
    assert out.returncode != 0 and "no database no_such_db to back up" in out.stderr


def test_a_backup_keeps_the_safety_database_while_a_task_holds_the_site_lock(host):
    (host.stub / "databases").write_text("acme_kitchens\nacme_kitchens-before-restore\n")
    with open(host.root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        out = host.run("backup")
    assert out.returncode == 0, out.stderr
    assert "SAFETY_KEPT acme_kitchens-before-restore (a task holds the site lock)" in out.stdout
    (host.stub / "drop.fails").touch()
    out = host.run("backup")
    assert out.returncode == 0 and "SAFETY_KEPT acme_kitchens-before-restore (ERROR:  must be owner" in out.stdout


def test_list_names_the_safety_database_when_there_is_one(host):
    (host.stub / "databases").write_text("acme_kitchens\n")
    assert db.parse_safety(host.run("list").stdout) is None
    (host.stub / "databases").write_text("acme_kitchens\nacme_kitchens-before-restore\n")
    kept = db.parse_safety(host.run("list").stdout)
    assert kept is not None and kept.name == "acme_kitchens-before-restore" and kept.size == 5000000
    (host.root / ".env").chmod(0)
    if os.geteuid() != 0:
        assert db.parse_safety(host.run("list").stdout) is None


@pytest.mark.parametrize("command", [["scratch", "create"], ["restoredb", "create"], ["restoredb", "switch"], ["restoredb", "back"]])
def test_the_postgres_commands_refuse_any_other_user(host, command):
    out = host.run(*command)
    assert out.returncode != 0 and "this runs as postgres" in out.stderr
    assert not (host.stub / "psql.argv").exists()


def test_discard_drops_the_restored_copy_as_its_owner(host):
    (host.stub / "databases").write_text("acme_kitchens\nrestore-acme_kitchens\n")
    assert host.run("discard").returncode == 0
    assert (host.stub / "dropped").read_text().split() == ["restore-acme_kitchens"]


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
    assert db.first(out.stdout, "MIGRATE") | {"seconds": ""} == {"rc": "0", "verdict": "ok", "pending": "0", "seconds": ""}
    report, failure = rendered(site, out)
    assert failure == "" and "2 tables, 501 rows" in report and "public.notes_note: 498 restored, 500 live" in report
    assert "no unapplied migrations" in report and "drop scratch database rehearse-acme_kitchens" in report
    # Each step shows how long its part took on the host, not how long its report took here.
    for tag, step in [("VERIFIED", "verify"), ("SCRATCH", "create scratch database rehearse-acme_kitchens"),
                      ("RESTORED", "restore into the scratch database"), ("COUNTED", "tables and row counts"),
                      ("MIGRATE", "migrate --check"), ("DROPPED", "drop scratch database rehearse-acme_kitchens")]:
        assert f" {step} ({float(db.first(out.stdout, tag)['seconds']):.2f}s)" in report, (tag, report)


def test_rehearse_counts_migrations_a_backup_predates_and_passes(host, site):
    good = rehearsal_host(host, migrate=MIGRATE_PENDING, migrate_rc=1)
    out = host.run("rehearse", str(good))
    assert out.returncode == 0, out.stderr
    assert db.first(out.stdout, "MIGRATE") | {"seconds": ""} == {"rc": "1", "verdict": "pending", "pending": "2", "seconds": ""}
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
    assert db.first(out.stdout, "DROPPED")["db"] == "rehearse-acme_kitchens" and db.first(out.stdout, "REHEARSED") is None
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
