"""check, status and logs: the facts the host prints, judged here from data; arguments checked before connecting."""

import io
import subprocess
import threading
import time
from types import SimpleNamespace

import pytest
from invoke import Config, Context
from invoke.exceptions import Exit

from sum_tasks.cli import check as check_task
from sum_tasks.cli import logs, status
from sum_tasks.commands import backup as db
from sum_tasks.commands import check
from sum_tasks.configuration import load_site
from sum_tasks.host import targets as remote

NOW = 1795723759  # 2026-11-26 20:09:19 UTC
SHA = "1f8176581cedda8ce1a42675197bd2c16833c03d"
RELEASE = "20261126T195308Z-1f817658"
BACKUP = "acme-kitchens_db_20261126T195321Z-pre-20261126t195308z-1f817658.sql.gz"
# As a real host prints it: rules padded with spaces.
UFW = "".join(line.ljust(74) + "\n" if "ALLOW" in line else line + "\n" for line in [
    "Status: active", "Logging: on (low)", "Default: deny (incoming), allow (outgoing), deny (routed)", "New profiles: skip", "",
    "To                         Action      From", "--                         ------      ----",
    *(f"{rule:<27}ALLOW IN    Anywhere{' (v6)' if 'v6' in rule else ''}" for rule in
      ("22/tcp", "80/tcp", "443/tcp", "22/tcp (v6)", "80/tcp (v6)", "443/tcp (v6)")),
])
HEALTH = '{"status": "%s", "version": {"git_sha": "%s", "release": "%s"}}'
SECTIONS = {
    "redis_active": "active\n",
    "redis_listen": "",
    "current": f"/srv/sum/acme-kitchens/releases/{RELEASE}\n",
    "live": "/run/sum/acme-kitchens/blue.sock\n",
    "blue": f"/srv/sum/acme-kitchens/releases/{RELEASE}\n",
    "green": "",
    "active": "active\ninactive\ninactive\nactive\n",
    "release_env": f"GIT_SHA={SHA}\nSUM_RELEASE_ID={RELEASE}\n",
    "deploy_check": "System check identified no issues (2 silenced).\n",
    "deploy_check_status": "0\n",
    "health": HEALTH % ("ok", SHA, RELEASE) + "\n\n200\n",
    "env_stat": "600 deploy deploy\n",
    "ufw": UFW,
    "ssh_ports": "22\n",
    "disk": "6092832768\n44816\n74628331\n",
    "tls": "notAfter=Nov 27 07:53:07 2026 GMT\nissuer=CN = Caddy Local Authority - ECC Intermediate\n",
    "tls_ca": "notAfter=Oct  4 19:53:07 2036 GMT\nsubject=CN = Caddy Local Authority - 2026 ECC Root\n",
    "now": f"{NOW}\n",
    "files": f"{BACKUP}\t399\t1795722801\t{'a' * 64}\t-\n",
    "media": f"{BACKUP}\tSITE snapshot=3f2a91c0 files=12 bytes=5000 added=5000 seconds=0.40\n",
    "service": "Result=success\nExecMainStartTimestamp=\nExecMainExitTimestamp=\nExecMainStatus=0\nLoadState=loaded\nActiveState=inactive\n",
    "timer": "NextElapseUSecRealtime=Fri 2026-11-27 03:15:00 UTC\nLastTriggerUSec=\nLoadState=loaded\nActiveState=active\nUnitFileState=enabled\n",
}


def output(**changes):
    """The check script's output: the healthy host's sections with `changes` (None drops a section)."""
    sections = {**SECTIONS, **changes}
    return "".join(f"@@{name}\n{text}" for name, text in sections.items() if text is not None)


@pytest.fixture
def internal(site_config):
    return load_site({**site_config, "tls": "internal"})


def by_name(checks):
    return {c.name: c for c in checks}


# ---------------------------------------------------------------- the whole checklist


def test_a_healthy_host_passes_every_check(internal):
    checks = check.judge(internal, output())
    assert [c.name for c in checks] == ["redis", "gunicorn", "caddy", "health", "django deploy", "firewall", ".env", "disk", "tls", "backup",
                                        "backup timer"]
    assert {c.status for c in checks} == {"ok"}, [c for c in checks if c.status != "ok"]
    found = by_name(checks)
    assert found["health"].detail == "HTTP 200 ok at 1f8176581ced"
    assert "blue live, active" in found["gunicorn"].detail and RELEASE in found["gunicorn"].detail
    assert found["firewall"].detail == "ufw active, deny incoming, allow 22/tcp 80/tcp 443/tcp"
    assert "3600 days left" in found["tls"].detail and "12h left" in found["tls"].detail
    assert found["backup"].detail.startswith(BACKUP) and "15m old" in found["backup"].detail
    assert check.counts(checks) == "11 ok, 0 warn, 0 fail"


def test_a_missing_site_is_one_failure(site):
    assert check.judge(site, "@@missing\n") == [check.Check("site", "fail", "/srv/sum/acme-kitchens does not exist: run `fab provision`")]


def test_celery_is_checked_only_when_enabled(site_config):
    celery = load_site({**site_config, "celery": True})
    assert check.units(celery)[-2:] == ["sum-acme-kitchens-celery.service", "caddy.service"]
    found = by_name(check.judge(celery, output(active="active\ninactive\ninactive\nfailed\nactive\n")))
    assert found["celery"].status == "fail" and "failed" in found["celery"].detail
    assert found["caddy"].status == "ok"
    assert "celery" not in by_name(check.judge(load_site(site_config), output()))


def test_the_script_is_valid_shell_with_every_value_quoted():
    config = {"site_slug": "acme", "domains": ["acme.test"], "project_module": "x", "tls": "internal"}
    site = load_site(config)
    script = check.check_script(site).text
    subprocess.run(["sh", "-n", "-c", script], check=True)
    assert "-servername acme.test" in script and "cd /srv/sum/acme " in script
    assert "@@tls_ca" in script and check.CADDY_ROOT_CA in script
    assert "@@tls" not in check.check_script(load_site({**config, "tls": "off"})).text
    assert "@@tls_ca" not in check.check_script(load_site({**config, "tls": "auto"})).text


# ---------------------------------------------------------------- each check


LOOPBACK_6379 = "LISTEN 0      511    127.0.0.1:6379 0.0.0.0:*\nLISTEN 0      511        [::1]:6379    [::]:*\n"


@pytest.mark.parametrize("active,listen,status,words", [
    ("active", "", "ok", "sum-acme-kitchens-redis.service active, on its own socket; no host-wide Redis"),
    ("active", LOOPBACK_6379, "warn", "the host-wide Redis still runs on 127.0.0.1:6379, [::1]:6379"),
    ("failed", "", "fail", "sum-acme-kitchens-redis.service is failed"),
    ("", "", "fail", "is unknown"),
    ("active", "LISTEN 0 511 0.0.0.0:6379 0.0.0.0:*\n", "fail", "listens on 0.0.0.0:6379"),
])
def test_redis(site, active, listen, status, words):
    result = check.check_redis(site, active, listen)
    assert result.status == status and words in result.detail


@pytest.mark.parametrize("changes,status,words", [
    ({"current": ""}, "fail", "no live release"),
    ({"blue": ""}, "fail", "no colour runs the live release"),
    ({"active": "failed\ninactive\ninactive\nactive\n"}, "fail", "blue is live but failed"),
    ({"active": "active\nactive\ninactive\nactive\n", "green": "/srv/sum/acme-kitchens/releases/older\n"}, "ok",
     "; green active on older; amber inactive"),
    ({"live": "/run/sum/acme-kitchens/green.sock\n"}, "fail", "live.sock names green, but blue runs the live release"),
    ({"live": ""}, "fail", "live.sock names nothing"),
])
def test_gunicorn(site, changes, status, words):
    result = by_name(check.check_services(site, {**SECTIONS, **changes}))["gunicorn"]
    assert result.status == status and words in result.detail


def test_caddy_down_fails(site):
    assert by_name(check.check_services(site, {**SECTIONS, "active": "active\ninactive\ninactive\n"}))["caddy"].status == "fail"


@pytest.mark.parametrize("section,status,words", [
    (HEALTH % ("ok", SHA, RELEASE) + "\n\n200\n", "ok", "HTTP 200 ok at 1f8176581ced"),
    (HEALTH % ("degraded", SHA, RELEASE) + "\n\n200\n", "warn", "HTTP 200 degraded"),
    (HEALTH % ("unhealthy", SHA, RELEASE) + "\n\n503\n", "fail", "HTTP 503 unhealthy"),
    (HEALTH % ("ok", "b" * 40, RELEASE) + "\n\n200\n", "warn", "but the live release is 1f8176581ced"),
    ("\n000\n", "fail", "no answer"),
    ("<html>Bad gateway</html>\n502\n", "fail", "HTTP 502 (no status)"),
])
def test_health(section, status, words):
    result = check.check_health(section, SECTIONS["release_env"])
    assert result.status == status and words in result.detail


@pytest.mark.parametrize("status_text,ports,result,words", [
    (UFW, "22\n", "ok", "allow 22/tcp 80/tcp 443/tcp"),
    (UFW.replace("22/tcp", "2222/tcp"), "2222\n", "ok", "allow 80/tcp 443/tcp 2222/tcp"),
    (UFW, "2222\n", "fail", "provision allows 80/tcp 443/tcp 2222/tcp"),
    (UFW + "5432/tcp                   ALLOW IN    10.0.0.5\n", "22\n", "ok", "(5432/tcp: not sum_tasks', left alone)"),
    (UFW + "2222/tcp                   ALLOW IN    Anywhere                   # sum_tasks\n", "22\n", "fail", "run provision"),
    (UFW.replace("80/tcp ", "81/tcp "), "22\n", "fail", "provision allows 22/tcp 80/tcp 443/tcp"),
    ("Status: inactive\n", "22\n", "fail", "not active"),
    (UFW.replace("deny (incoming)", "allow (incoming)"), "22\n", "fail", "denies incoming"),
    ("NOT_ROOT\n", "", "warn", "needs root"),
])
def test_firewall(status_text, ports, result, words):
    found = check.check_ufw(status_text, ports)
    assert found.status == result and words in found.detail


@pytest.mark.parametrize("stat,status,words", [
    ("600 deploy deploy", "ok", "mode 0600, owner deploy:deploy"),
    ("644 deploy deploy", "fail", "mode 0644"),
    ("600 root root", "fail", "owner root:root"),
    ("stat: cannot statx '.env': No such file or directory", "fail", "missing"),
])
def test_env_file(site, stat, status, words):
    found = check.check_env(site, stat)
    assert found.status == status and words in found.detail


@pytest.mark.parametrize("free,status", [(10**10, "ok"), (4 * 10**8, "warn"), (15 * 10**7, "fail")])
def test_disk(free, status):
    # release 10 MB + venv 90 MB + backup 20 MB = 120 MB, x1.5 = 180 MB needed; warn under 3x that.
    found = check.check_disk(free, 10**7, 9 * 10**7, 2 * 10**7)
    assert found.status == status
    assert "needs ~180.0 MB (release 10.0 MB + venv 90.0 MB + backup 20.0 MB, x1.5)" in found.detail


def test_disk_figures_come_from_the_host_and_the_newest_backup(site):
    found = by_name(check.judge(site, output(disk="999\n", files=f"{BACKUP}\t5000\t1\t{'a' * 64}\t-\n")))
    assert found["disk"].status == "fail" and "999 B free" in found["disk"].detail and "backup 5.0 KB" in found["disk"].detail


def test_certificate_dates_are_read_from_openssl():
    assert check.cert_end("notAfter=Oct  4 19:53:07 2036 GMT\n").isoformat() == "2036-10-04T19:53:07+00:00"
    assert check.cert_end("issuer=x\n") is None
    assert check.cert_end("notAfter=garbage\n") is None


@pytest.mark.parametrize("days,status", [(60, "ok"), (10, "warn"), (2, "fail"), (-1, "fail")])
def test_tls_auto_days_left(site, days, status):
    end = time.strftime("%b %d %H:%M:%S %Y GMT", time.gmtime(NOW + days * 86400 + 60))
    found = check.check_tls(site, f"notAfter={end}\nissuer=C = US, O = Let's Encrypt, CN = R11\n", "", NOW)
    assert found.status == status
    assert ("expired" in found.detail) if days < 0 else f"{days} days left" in found.detail or f"{days * 24}h" in found.detail


def test_tls_internal_reports_the_ca(internal):
    found = check.check_tls(internal, SECTIONS["tls"], SECTIONS["tls_ca"], NOW)
    assert found.status == "ok" and "internal CA 'Caddy Local Authority - 2026 ECC Root': 3600 days left" in found.detail
    no_ca = check.check_tls(internal, SECTIONS["tls"], "", NOW)
    assert no_ca.status == "ok" and "readable by root only" in no_ca.detail
    expired = check.check_tls(internal, SECTIONS["tls"], SECTIONS["tls_ca"], NOW + 86400)
    assert expired.status == "fail" and "expired" in expired.detail


def test_tls_none_served_or_off(site, site_config):
    assert check.check_tls(site, "", "", NOW).status == "fail"
    assert check.check_tls(load_site({**site_config, "tls": "off"}), "", "", NOW) is None


def test_backup_age(site, site_config):
    entry = db.Entry(BACKUP, 399, 1795722801, "a" * 64)
    media = {BACKUP: db.Media("3f2a91c0", 12, 5000)}
    ok = check.check_backup(site, NOW, [entry], media)
    assert ok.status == "ok" and "+ media 3f2a91c0 (12 files, 5.0 KB)" in ok.detail
    backup_time = check.backups.entry_time(site, entry)
    assert check.check_backup(site, backup_time + 26 * 3600 - 60, [entry], media).status == "ok"
    late = check.check_backup(site, backup_time + 27 * 3600, [entry], media)
    assert late.status == "fail" and "max_age_hours (26h)" in late.detail
    weekly = load_site({**site_config, "backups": {"max_age_hours": 170}})
    assert check.check_backup(weekly, backup_time + 27 * 3600, [entry], media).status == "ok"
    unverified = db.Entry(BACKUP, 399, 1795722801, "")
    assert check.check_backup(site, NOW, [unverified], media).status == "fail"
    assert check.check_backup(site, NOW, [], media).detail.startswith("no verified site backup")
    # A database-only dump (no media snapshot) is no site backup.
    assert check.check_backup(site, NOW, [entry], {}).status == "fail"
    # The database the last restore replaced is named while it is kept, whatever the verdict.
    kept = db.SafetyDb("acme-before-restore", 9_400_000, "sum_tasks: replaced by db.restore at 2026-12-01 10:00:00Z")
    shown = check.check_backup(site, NOW, [entry], media, kept)
    assert shown.status == "ok" and shown.detail.endswith("; safety database acme-before-restore, 9.4 MB: replaced by db.restore "
                                                          "at 2026-12-01 10:00:00Z; the next good backup drops it"), shown
    assert "safety database acme-before-restore" in check.check_backup(site, NOW, [], media, kept).detail


def test_backup_timer(site):
    service, timer = db.parse_list(output())[2:]
    assert check.check_timer(service, timer).status == "ok"
    assert check.check_timer({**service, "ExecMainExitTimestamp": "Fri", "Result": "exit-code", "ExecMainStatus": "1"}, timer).status == "warn"
    assert check.check_timer(service, {**timer, "UnitFileState": "disabled"}).status == "warn"
    assert check.check_timer({}, {}).status == "warn"


# ---------------------------------------------------------------- hosts and exit status


def fake_conn(name):
    return SimpleNamespace(user="root", host=name, original_host=name)


def test_parallel_hosts_run_at_once_and_print_one_block_each(site, capsys):
    started = threading.Barrier(3, timeout=5)

    def work(conn, _site, stream):
        started.wait()  # all three at once, or this times out
        for i in range(3):
            stream.write(f"{conn.host} line {i}\n")
            time.sleep(0.01)
        return [conn.host]

    pairs = [(fake_conn(h), site) for h in ("a", "b", "c")]
    results = remote.on_hosts(work, pairs, parallel=True)
    assert results == {"root@a": ["a"], "root@b": ["b"], "root@c": ["c"]}
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{h} line {i}" for h in "abc" for i in range(3)]


def test_one_host_or_no_parallel_runs_in_turn_on_stdout(site):
    seen = []
    remote.on_hosts(lambda conn, _s, stream: seen.append((conn.host, stream)), [(fake_conn("a"), site), (fake_conn("b"), site)], False)
    assert seen == [("a", None), ("b", None)]


def test_any_fail_exits_non_zero_naming_host_and_checks(site_config, monkeypatch):
    def fake(conn, site, stream=None):
        return [check.Check("redis", "fail", "x"), check.Check("disk", "warn", "y")] if conn.host == "b" else [check.Check("redis", "ok", "z")]

    monkeypatch.setattr(check_task, "check_host", fake)
    ctx = Context(Config(overrides={"sum": {**site_config, "hosts": ["a", "b"]}}))
    with pytest.raises(Exit) as err:
        check_task.check(ctx)
    assert err.value.code == 1 and str(err.value.message) == "check failed: root@b: redis"


def test_a_host_that_cannot_be_read_is_a_failed_check(site):
    class Broken:
        user, host, original_host, config, is_connected = "root", "gone", "gone", SimpleNamespace(), True

        def run(self, *args, **kwargs):
            raise OSError("Connection refused")

    stream = io.StringIO()
    checks = check_task.check_host(Broken(), site, stream)
    assert [(c.name, c.status) for c in checks] == [("host", "fail")] and "Connection refused" in checks[0].detail
    assert "[root@gone] check: 0 ok, 0 warn, 1 fail" in stream.getvalue()


# ---------------------------------------------------------------- status


def record(rid, result="good", **extra):
    return {"id": rid, "ref": rid.split("-")[0], "sha": "c" * 40, "result": result, "at": "2026-11-26T19:53:08+00:00", "who": "me@here", **extra}


def test_status_splits_the_live_record_from_the_ones_before():
    records = [record("a"), record("b"), record("c", "failed: switch"), record("b", rollback=True)]
    live, previous = status.split_records(records, "b")
    assert live is records[3]
    assert [r["id"] for r in previous] == ["c", "b", "a"]
    assert status.split_records(records, "")[0] is None
    assert len(status.split_records([record(str(i)) for i in range(20)], "19")[1]) == status.PREVIOUS


def test_status_describes_records_and_backups(site):
    line = status.describe_record(record("r1", rollback=True), 1795722788 + 3600 * 2, on_disk=False)
    assert "r1" in line and "good (rollback)" in line and "2h 00m ago by me@here" in line and line.endswith("(pruned)")
    assert "unknown time" in status.describe_record({**record("r"), "at": "x"}, 0, True)
    assert status.describe_backup(site, NOW, [db.Entry(BACKUP, 399, 1, "a" * 64)]) == f"{BACKUP}, 399 B, 15m ago, verified"
    assert "NOT verified" in status.describe_backup(site, NOW, [db.Entry(BACKUP, 399, 1, "")])
    assert status.describe_backup(site, NOW, []).startswith("none in /srv/sum/acme-kitchens/backups")


# ---------------------------------------------------------------- logs


@pytest.mark.parametrize("value", ["0", "-1", "x", "100001", "", "1.5"])
def test_logs_refuses_bad_line_counts(value):
    with pytest.raises(Exit, match="--lines must be a whole number"):
        logs.validate_lines(value)


def test_logs_services(site, site_config):
    assert logs.validate_lines(" 20 ") == 20
    assert logs.units(site, "app") == [f"sum-acme-kitchens-gunicorn@{c}.service" for c in ("blue", "green", "amber")]
    assert logs.units(site, "caddy") == ["caddy.service"]
    assert logs.units(site, "backup") == ["sum-acme-kitchens-backup.service"]
    with pytest.raises(Exit, match="--service must be one of app, caddy, celery, redis, schedule, backup"):
        logs.validate_service("nginx", site)
    with pytest.raises(Exit, match="celery is not enabled"):
        logs.validate_service("celery", site)
    celery = load_site({**site_config, "celery": True})
    assert logs.validate_service("celery", celery) == "celery"
    assert logs.units(celery, "celery") == ["sum-acme-kitchens-celery.service"]


def test_logs_command_follows_until_the_session_closes(site):
    once = logs.journal_script(site, "app", 5, follow=False).text
    assert once == ("journalctl --no-pager --no-hostname -o with-unit -u sum-acme-kitchens-gunicorn@blue.service "
                    "-u sum-acme-kitchens-gunicorn@green.service -u sum-acme-kitchens-gunicorn@amber.service -n 5")
    follow = logs.journal_script(site, "caddy", 5, follow=True).text
    assert " -f & pid=$!" in follow and "cat >/dev/null" in follow
    subprocess.run(["sh", "-n", "-c", follow], check=True)


def test_logs_validates_before_connecting(site_config):
    ctx = Context(Config(overrides={"sum": {**site_config, "hosts": ["unreachable.invalid"]}}))
    with pytest.raises(Exit, match="--lines"):
        logs.logs(ctx, lines="many")
    with pytest.raises(Exit, match="--service"):
        logs.logs(ctx, service="db")


def test_a_host_that_refuses_the_connection_is_a_failed_check_with_the_reason(site):
    class Unreachable:
        user, host, original_host, config, is_connected = "root", "gone", "gone", SimpleNamespace(), False

        def open(self):
            raise ConnectionRefusedError("[Errno 111] Connection refused")

    stream = io.StringIO()
    checks = check_task.check_host(Unreachable(), site, stream)
    assert [(c.name, c.status) for c in checks] == [("host", "fail")]
    assert "cannot connect to root@gone: ConnectionRefusedError" in checks[0].detail


SCHEDULED = {"publish": {"command": "publish_scheduled", "when": "*:0/10"}, "sessions": {"command": "clearsessions", "when": "daily"}}


def test_each_schedule_is_a_check_and_a_failed_run_fails_it(site_config):
    from sum_tasks.configuration import load_site
    site = load_site({**site_config, "schedule": SCHEDULED})
    timer = "LoadState=loaded\nUnitFileState=enabled\nActiveState=active\nNextElapseUSecRealtime=Tue 2026-12-01 21:00:00 UTC\n"
    good = "Result=success\nExecMainStatus=0\nExecMainExitTimestamp=Tue 2026-12-01 20:50:01 UTC\nActiveState=inactive\n"
    failed = "Result=exit-code\nExecMainStatus=1\nExecMainExitTimestamp=Tue 2026-12-01 20:40:01 UTC\nActiveState=failed\n"
    output = f"@@schedule publish\n{good}@@schedule_timer publish\n{timer}@@schedule sessions\n{failed}@@schedule_timer sessions\n{timer}"
    checks = {c.name: c for c in check.check_schedules(site, output)}
    assert checks["schedule publish"].status == "ok"
    assert "manage.py publish_scheduled, *:0/10 (enabled): last run Tue 2026-12-01 20:50:01 UTC: succeeded" in checks["schedule publish"].detail
    assert checks["schedule sessions"].status == "fail" and "FAILED (exit-code, exit status 1)" in checks["schedule sessions"].detail
    never = check.check_schedules(site, f"@@schedule publish\nActiveState=inactive\n@@schedule_timer publish\n{timer}")[0]
    assert never.status == "ok" and "has not run yet" in never.detail
    missing = check.check_schedules(site, "")
    assert [c.status for c in missing] == ["fail", "fail"] and "no timer on this host" in missing[0].detail
    assert "@@schedule publish" in check.check_script(site).text


DJANGO_WARNINGS = """System check identified some issues:

WARNINGS:
?: (security.W004) You have not set a value for the SECURE_HSTS_SECONDS setting.
?: (security.W008) Your SECURE_SSL_REDIRECT setting is not set to True.

System check identified 2 issues (0 silenced).
"""


@pytest.mark.parametrize("output,status,result,words", [
    ("System check identified no issues (2 silenced).\n", "0", "ok", "no issues (2 silenced)"),
    (DJANGO_WARNINGS, "0", "warn", "security.W004, security.W008"),
    ("SystemCheckError: System check identified some issues:\n\nERRORS:\n?: (fields.E304) clash\n", "1", "fail", "fields.E304"),
    ("Traceback (most recent call last):\nModuleNotFoundError: No module named 'x'\n", "1", "fail", "did not run (exit 1)"),
    ("", "none", "fail", "no live release"),
])
def test_django_check_deploy(output, status, result, words):
    got = check.check_deploy(output, status)
    assert got.status == result and words in got.detail, got


@pytest.mark.parametrize("state,status", [("active", "ok"), ("deactivating", "warn"), ("activating", "warn"), ("failed", "fail"),
                                          ("inactive", "fail")])
def test_a_celery_worker_restarting_after_a_release_is_a_warning_not_a_failure(site_config, state, status):
    from sum_tasks.configuration import load_site

    site = load_site({**site_config, "celery": True})
    found = by_name(check.check_services(site, {**SECTIONS, "active": f"active\ninactive\ninactive\n{state}\nactive\n"}))
    assert found["celery"].status == status, found["celery"]
    assert found["caddy"].status == "ok"
    if status == "warn":
        assert "restarting after a release or rollback" in found["celery"].detail
    assert by_name(check.check_services(site, {**SECTIONS, "active": "active\ninactive\ninactive\nactive\ndeactivating\n"}))["caddy"].status == "fail"
