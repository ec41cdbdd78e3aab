"""The off-site script's `rehearse` (what the monthly timer and `fab offsite.rehearse` run), here on stubs: restic gives back a
dump, a stand-in for the backup script prints what the real one prints. Its lock, its status line, what it removes."""

import os
import shutil
import stat
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from sum_tasks.commands import check, lock, offsite
from sum_tasks.commands.templating import render
from sum_tasks.configuration import load_site
from sum_tasks.configuration.hostmap import HostMap

SITE = {"site_slug": "acme", "domains": ["acme.example"], "project_module": "acme",
        "offsite": {"target": "restic@backup.example:2222", "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk"}}
DUMP = "acme_db_20261201T031500Z.sql.gz"
PASSED = textwrap.dedent("""\
    VERIFIED format=gzip size=1234 sha256=abc seconds=0.01
    SCRATCH db=rehearse-acme seconds=0.20
    RESTORED db=rehearse-acme seconds=1.50
    COUNTED tables=12 rows=5012 differing=1 seconds=0.10
    @@live
    public.notes_note\t500
    @@migrate
    MIGRATE rc=0 verdict=ok pending=0
    REHEARSED file=x seconds=2.00
    @@scratch
    DROPPED db=rehearse-acme
""")
RESTORE_FAILED = "VERIFIED format=gzip size=1 sha256=abc seconds=0.01\nSCRATCH db=rehearse-acme seconds=0.2\n@@scratch\nDROPPED db=rehearse-acme seconds=0.3\n"
ROLLED_BACK = "sum-db: restore into rehearse-acme failed and was rolled back, the database is as it was: ERROR:  syntax error\n"

RESTIC = """\
#!/bin/bash
printf '%s\\n' "$@" > "$STUB/restic.argv"
if [ -f "$STUB/restic.fail" ]; then echo "Fatal: unable to open config file: <config/> does not exist" >&2; exit 1; fi
target="" prev=""
for a in "$@"; do if [ "$prev" = --target ]; then target=$a; fi; prev=$a; done
mkdir -p "$target/backups"
echo dump > "$target/backups/{dump}"
(cd "$target/backups" && sha256sum {dump} > {dump}.sha256)
echo "restoring <Snapshot 1a2b3c4d of [/srv/sum/acme/backups/{dump}] at 2026-12-01 03:16:00 +0000 UTC by deploy@vps> to $target"
"""
# The backup script's stand-in: notes what it was given and whether it ran under the site lock, then prints its part.
DB = """\
#!/bin/bash
echo "$*" > "$STUB/db.argv"
if [ -f "$2" ]; then echo present > "$STUB/db.saw"; fi
if flock -n "$LOCK" true; then echo free > "$STUB/db.lock"; else echo held > "$STUB/db.lock"; fi
cp "$LOCK_INFO" "$STUB/db.holder" 2>/dev/null
cat "$STUB/db.out"
cat "$STUB/db.err" >&2 2>/dev/null
exit "$(cat "$STUB/db.rc")"
"""


class Host:
    """The rendered off-site script with the site root, restic and the backup script in tmp_path."""

    def __init__(self, tmp_path) -> None:
        for tool in ("bash", "flock", "sha256sum"):
            if not shutil.which(tool):
                pytest.fail(f"{tool} is needed")
        self.site = load_site(SITE)
        self.paths = HostMap(self.site, str(tmp_path / "site"))
        self.stub, bin_dir = tmp_path / "stub", tmp_path / "bin"
        for d in (self.stub, bin_dir, tmp_path / "site" / "backups", tmp_path / "site" / "recovery"):
            d.mkdir(parents=True)
        self.paths.backup_script = str(bin_dir / "sum-acme-db")
        for path, text in ((bin_dir / "restic", RESTIC.format(dump=DUMP)), (bin_dir / "sum-acme-db", DB)):
            path.write_text(text)
            path.chmod(0o755)
        self.script = tmp_path / "sum-acme-offsite"
        self.script.write_text(render("offsite.sh.j2", {**offsite.script_context(self.site), "paths": self.paths}))
        self.script.chmod(0o755)
        self.env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "STUB": str(self.stub), "LOCK": self.paths.lock,
                    "LOCK_INFO": self.paths.lock_info}
        self.db(PASSED)

    def db(self, out: str, err: str = "", rc: int = 0) -> None:
        (self.stub / "db.out").write_text(out)
        (self.stub / "db.err").write_text(err)
        (self.stub / "db.rc").write_text(str(rc))

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.script), "rehearse", *args], env=self.env, capture_output=True, text=True, timeout=60, check=False)

    def status_text(self) -> str:
        path = Path(self.paths.rehearsal_status)
        return path.read_text() if path.exists() else ""

    def status(self) -> offsite.Rehearsal | None:
        return offsite.parse_rehearsal(self.status_text())

    def hold_lock(self, seconds: float, holder: str = "release v2 by op@laptop since 2026-12-01 10:00:00Z (pid 1)") -> subprocess.Popen:
        with open(self.paths.lock_info, "w") as f:
            f.write(holder + "\n")
        proc = subprocess.Popen(["flock", "-o", self.paths.lock, "sleep", str(seconds)])
        deadline = time.monotonic() + 5
        while subprocess.run(["flock", "-n", self.paths.lock, "true"], check=False).returncode == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        return proc


@pytest.fixture
def host(tmp_path):
    return Host(tmp_path)


def test_a_rehearsal_fetches_the_dump_rehearses_it_under_the_lock_and_records_the_result(host):
    out = host.run("--by", "op@laptop")
    assert out.returncode == 0, out.stderr
    fetched = f"{host.paths.recovery}/backups/{DUMP}"
    assert (host.stub / "db.argv").read_text().split() == ["rehearse", fetched] and (host.stub / "db.saw").exists()
    assert (host.stub / "db.lock").read_text().strip() == "held"
    holder = (host.stub / "db.holder").read_text()
    assert holder.startswith("offsite.rehearse by op@laptop since ") and lock.holder_pid(holder.strip())
    assert "--include\n/backups\n" in (host.stub / "restic.argv").read_text()
    # Only the dump, and it is gone again; the lock's holder line too.
    assert not os.path.exists(f"{host.paths.recovery}/backups") and not os.path.exists(host.paths.lock_info)
    status = host.status()
    assert status.passed and status.fields["snapshot"] == "1a2b3c4d" and status.fields["dump"] == DUMP
    assert {k: status.fields[k] for k in ("tables", "rows", "differing", "migrations", "pending")} == \
        {"tables": "12", "rows": "5012", "differing": "1", "migrations": "ok", "pending": "0"}
    assert stat.S_IMODE(os.stat(host.paths.rehearsal_status).st_mode) == 0o600
    assert out.stdout.splitlines()[0] == f"FETCHED file={fetched} snapshot=1a2b3c4d"
    assert offsite.parse_rehearsal(out.stdout) == status
    assert check.check_rehearsal(host.site, host.status_text(), status.at + 3600) == check.Check(
        "rehearsal", "ok", f"passed 1h 00m ago: {DUMP} of snapshot 1a2b3c4d, 12 tables, 5,012 rows, migrate --check ok, "
        f"{status.fields['seconds']}s")
    # A timer that stopped rehearsing is noticed: the same pass, 63 days on, warns.
    stale = check.check_rehearsal(host.site, host.status_text(), status.at + 63 * 86400)
    assert stale.status == "warn" and "none in 62 days, is sum-acme-offsite-rehearse.timer running?" in stale.detail, stale
    assert check.check_rehearsal(host.site, host.status_text(), status.at + 61 * 86400).status == "ok"


def test_a_failed_restore_is_recorded_with_its_step_and_reason(host):
    host.db(RESTORE_FAILED, ROLLED_BACK, 1)
    out = host.run()
    assert out.returncode == 1 and ROLLED_BACK.strip() in out.stderr
    status = host.status()
    assert not status.passed and status.fields["step"] == "restore" and status.fields["dump"] == DUMP
    assert status.reason == ROLLED_BACK.strip().removeprefix("sum-db: ")
    assert not os.path.exists(f"{host.paths.recovery}/backups") and not os.path.exists(host.paths.lock_info)
    verdict = check.check_rehearsal(host.site, host.status_text(), status.at + 60)
    assert verdict.status == "fail" and "FAILED 1m ago at restore: restore into rehearse-acme failed and was rolled back" in verdict.detail


def test_an_unreadable_repository_fails_at_the_fetch(host):
    (host.stub / "restic.fail").touch()
    out = host.run()
    assert out.returncode == 1 and "Fatal: unable to open config file" in out.stderr
    status = host.status()
    assert not status.passed and status.fields["step"] == "fetch" and status.reason.startswith("Fatal: unable to open config file")
    assert not (host.stub / "db.argv").exists()


def test_a_locked_site_refuses_a_task_at_once_and_is_waited_for_by_the_timer(host):
    holder = host.hold_lock(30)
    try:
        out = host.run("--by", "op@laptop")
        assert out.returncode == lock.BUSY and "LOCKED release v2 by op@laptop" in out.stdout
        assert host.status() is None, "a refused task is no failed rehearsal"
        out = host.run("--wait", "1")
        assert out.returncode == lock.BUSY
        status = host.status()
        assert not status.passed and status.fields["step"] == "lock" and "the site lock stayed held for 1s: release v2" in status.reason
    finally:
        holder.kill()
        holder.wait()
    holder = host.hold_lock(2)
    started = time.monotonic()
    out = host.run("--wait", "60")
    holder.wait()
    assert out.returncode == 0 and time.monotonic() - started > 1, out.stderr
    assert host.status().passed


@pytest.mark.parametrize("args", [["../x"], ["latest", "--wait", "1h"], ["--wait"]])
def test_bad_arguments_are_refused(host, args):
    assert host.run(*args).returncode == 2 and not (host.stub / "restic.argv").exists()


def test_check_without_a_rehearsal_warns_and_without_offsite_says_nothing():
    site = load_site(SITE)
    assert check.check_rehearsal(site, "", 0).status == "warn" and "fab offsite.rehearse" in check.check_rehearsal(site, "", 0).detail
    assert check.check_rehearsal(site, "REHEARSAL at=x result=passed\n", 0).status == "warn"
    assert check.check_rehearsal(load_site({**SITE, "offsite": {}}), "REHEARSAL at=1 result=failed step=fetch reason=x\n", 9) is None


def task_with(host, monkeypatch, out: subprocess.CompletedProcess):
    """`fab offsite.rehearse` against a connection whose one remote command gives what the script gave here."""
    from fabric import Config, Connection

    from sum_tasks.cli import offsite as tasks
    from sum_tasks.commands.script import Result

    sent = []

    def run(conn, script, **kwargs):
        sent.append((script, kwargs))
        return Result(out.returncode, out.stdout, out.stderr)

    monkeypatch.setattr(tasks, "run", run)
    conn = Connection("deploy@vps.invalid", config=Config(overrides={"sum": SITE, "run": {"in_stream": False}}))
    return lambda: tasks.rehearse(conn), sent


def test_the_task_shows_the_scripts_run_and_refuses_a_locked_site(host, monkeypatch, capsys):
    from invoke.exceptions import Exit

    from sum_tasks.host.output import StepFailed

    rehearse, sent = task_with(host, monkeypatch, host.run("--by", "op@laptop"))
    rehearse()
    script, kwargs = sent[0]
    assert script.text.startswith("/usr/local/bin/sum-acme-offsite rehearse latest --by ") and kwargs["as_"] == "deploy"
    shown = capsys.readouterr().out
    assert f"{DUMP} of snapshot 1a2b3c4d" in shown and "12 tables, 5,012 rows" in shown
    assert f"offsite.rehearse latest: rehearsed {DUMP} from the off-site repository" in shown

    host.db(RESTORE_FAILED, ROLLED_BACK, 1)
    rehearse, _ = task_with(host, monkeypatch, host.run())
    with pytest.raises(StepFailed) as failed:
        rehearse()
    assert failed.value.step == "restore into the scratch database" and "failed and was rolled back" in failed.value.reason

    holder = host.hold_lock(30)
    try:
        rehearse, _ = task_with(host, monkeypatch, host.run())
    finally:
        holder.kill()
        holder.wait()
    with pytest.raises(Exit) as locked:
        rehearse()
    assert locked.value.code == 3 and "site acme on vps.invalid is locked: release v2 by op@laptop" in str(locked.value.message)
