"""check, status, logs and env.* on a real provisioned and released host, through the real `fab` command."""

import re
import secrets
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest
from e2e_support import as_app, live_colour, site_config
from site_repo import build_site_repo

from sum_tasks.testing.client import Client, make_client
from sum_tasks.testing.hosts import TestHost

pytestmark = pytest.mark.e2e

SAMPLER = ("nohup sh -c 'while :; do cat /proc/[0-9]*/cmdline 2>/dev/null | tr \"\\0\" \" \"; echo; sleep 0.02; done' "
           ">/root/argv.log 2>&1 & echo $! > /root/sampler.pid")
HEALTHY = ("for i in $(seq 150); do [ \"$(curl -sk -o /dev/null -w '%{http_code}' --resolve acme.test:443:127.0.0.1 "
           "https://acme.test/health/)\" = 200 ] && exit 0; sleep 0.2; done; exit 1")
FAB_WITH_CTRL_C = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                   "sys.argv = ['fab', *sys.argv[1:]]; runpy.run_module('fabric', run_name='__main__')")
CHECK_LINE = re.compile(r"^  (ok|warn|fail)\s+(\S+(?: \S+)?)\s{2,}(.*)$", re.MULTILINE)


@dataclass
class Site:
    host: TestHost
    client: Client

    def checks(self, output: str) -> dict[str, tuple[str, str]]:
        """{check name: (status, detail)} from `fab check` output."""
        return {name: (status, detail) for status, name, detail in CHECK_LINE.findall(output)}

    def env_state(self) -> str:
        return self.host.ssh("stat -c '%a %U %G' /srv/sum/acme/.env && sha256sum < /srv/sum/acme/.env").stdout

    def live_colour(self) -> str:
        """The colour Caddy's live.sock names."""
        return live_colour(self.host)

    def unit_env(self, key: str) -> str:
        """`key` in the environment of the live gunicorn's main process ('' when absent)."""
        pid = self.host.ssh(f"systemctl show -p MainPID --value sum-acme-gunicorn@{self.live_colour()}.service").stdout.strip()
        return self.host.ssh(f"tr '\\0' '\\n' < /proc/{pid}/environ | sed -n 's/^{key}=//p'").stdout.strip()


@pytest.fixture(scope="module")
def site(host_factory, tmp_path_factory):
    host = host_factory(suite="bookworm")
    root = tmp_path_factory.mktemp("ops")
    build_site_repo(root / "site")
    client = make_client(root / "site", site_config(host, health_timeout=10), {"vps": (host, "root"), "vps-again": (host, "root")})
    client.fab("provision")
    client.fab("-H", "deploy@vps", "release", "--ref", "v1")
    return Site(host, client)


def test_check_passes_on_a_healthy_site(site):
    out = site.client.fab("check")
    found = site.checks(out.stdout)
    assert set(found) == {"redis", "gunicorn", "caddy", "health", "django deploy", "firewall", ".env", "disk", "tls", "backup", "backup timer"}
    assert found["django deploy"] == ("ok", "System check identified no issues (2 silenced)."), found["django deploy"]
    assert {status for status, _ in found.values()} == {"ok"}, out.stdout
    assert re.search(r"HTTP 200 ok at [0-9a-f]{12}", found["health"][1])
    assert "internal CA 'Caddy Local Authority" in found["tls"][1] and "days left" in found["tls"][1]
    assert re.search(r"free; a release \+ backup needs ~[\d.]+ [KMG]?B \(release", found["disk"][1])
    assert re.search(r"\[root@vps\] check: 11 ok, 0 warn, 0 fail in [\d.]+s", out.stdout)
    assert re.search(r"^  ok\s+read the host \(one command\) \(\d+\.\d\ds\)", out.stdout, re.MULTILINE)

    # As the deploy user the firewall cannot be read: a warning, not a failure.
    as_deploy = site.client.fab("-H", "deploy@vps", "check")
    assert site.checks(as_deploy.stdout)["firewall"][0] == "warn"


def test_check_run_as_root_reads_the_deploy_users_files_as_the_deploy_user(site):
    """A link the deploy login plants in its own files reaches nothing of root's when root runs check."""
    host = site.host
    host.ssh("umask 077; echo GIT_SHA=0123456789abcdef0123456789abcdef01234567 > /root/planted")
    host.ssh("cd /srv/sum/acme/current && mv .release.env .release.env.kept && ln -s /root/planted .release.env", user="deploy")
    try:
        out = site.client.fab("check", check=False).stdout
    finally:
        host.ssh("cd /srv/sum/acme/current && rm .release.env && mv .release.env.kept .release.env", user="deploy")
    assert site.checks(out)["health"][0] == "ok" and "0123456789ab" not in out, out


def test_the_app_cannot_reach_caddys_admin_api_and_reloads_still_work(site):
    unit = f"sum-acme-gunicorn@{site.live_colour()}.service"
    assert as_app(site.host, unit, "id -un").stdout.strip() == "sum-acme"
    # Over TCP: nothing listens on Caddy's default admin port any more.
    tcp = as_app(site.host, unit, "curl -sS -m 5 http://localhost:2019/config/; echo rc=$?")
    assert "rc=7" in tcp.stdout + tcp.stderr, tcp
    assert site.host.ssh("ss -Hltn 'sport = :2019'").stdout.strip() == ""
    # Over its unix socket: the app cannot even reach the directory it is in.
    unix = as_app(site.host, unit, "curl -sS -m 5 --unix-socket /run/caddy/admin.sock http://caddy/config/; echo rc=$?")
    assert "rc=7" in unix.stdout + unix.stderr and "config" not in unix.stdout.split("rc=")[0], unix
    assert as_app(site.host, unit, "ls /run/caddy").returncode != 0
    # Caddy itself still takes reloads there: `caddy reload` as caddy reaches it, and a changed site file reloads.
    assert site.host.ssh("stat -c '%a %U %G' /run/caddy").stdout.split() == ["750", "caddy", "caddy"]
    site.host.ssh("runuser -u caddy -- caddy reload --config /etc/caddy/Caddyfile --adapter caddyfile")
    site.client.configure(site_config(site.host, health_timeout=10, domains=["acme.test", "www.acme.test", "shop.acme.test"]))
    try:
        out = site.client.fab("provision").stdout
        assert re.search(r"changed\s+caddy site", out), out
        # Caddy now has a certificate and a route for the new domain (the app answers; its ALLOWED_HOSTS follow at its next start).
        served = site.host.ssh("curl -sk -o /dev/null -w '%{http_code}' --resolve shop.acme.test:443:127.0.0.1 "
                               "https://shop.acme.test/health/", check=False).stdout
        assert served in ("200", "400"), served
    finally:
        site.client.configure(site_config(site.host, health_timeout=10))
        site.client.fab("provision")


def test_check_on_several_hosts_in_parallel(site):
    site.client.configure(site_config(site.host, health_timeout=10, hosts=["vps", "vps-again"]))
    try:
        out = site.client.fab("check", "--parallel")
    finally:
        site.client.configure(site_config(site.host, health_timeout=10))
    blocks = re.findall(r"^\[root@(vps|vps-again)\] check\n((?:  .*\n)+)\[root@\1] check: 11 ok", out.stdout, re.MULTILINE)
    assert sorted(name for name, _ in blocks) == ["vps", "vps-again"], out.stdout


@pytest.mark.parametrize("name,break_it,fix_it", [
    ("redis", "systemctl stop sum-acme-redis.service", "systemctl start sum-acme-redis.service"),
    (".env", "chmod 644 /srv/sum/acme/.env", "chmod 600 /srv/sum/acme/.env"),
    ("firewall", "ufw delete allow 80/tcp", "ufw allow 80/tcp comment sum_tasks"),
    ("gunicorn", "systemctl stop sum-acme-gunicorn@blue sum-acme-gunicorn@green sum-acme-gunicorn@amber",
     "for x in blue green amber; do [ -e /srv/sum/acme/colours/$x ] && systemctl start sum-acme-gunicorn@$x; done; true"),
])
def test_check_fails_on_what_is_broken(site, name, break_it, fix_it):
    site.host.ssh(break_it)
    try:
        out = site.client.fab("check", check=False)
    finally:
        site.host.ssh(fix_it)
        site.host.ssh(HEALTHY)
    assert out.returncode == 1
    found = site.checks(out.stdout)
    assert found[name][0] == "fail", out.stdout
    assert re.search(rf"check failed: root@vps: .*{re.escape(name)}", out.stderr)
    assert site.client.fab("check").returncode == 0


def test_status_shows_the_live_release_and_the_lock(site):
    live = site.host.ssh("readlink /srv/sum/acme/current").stdout.strip().rsplit("/", 1)[1]
    out = site.client.fab("status").stdout
    assert re.search(rf"^  live\s+{live}\s+v1\s+[0-9a-f]{{12}}\s+good", out, re.MULTILINE), out
    assert re.search(r"^  last backup\s+acme_db_\S+\.sql\.gz, [\d.]+ [KMG]?B, .* ago, verified$", out, re.MULTILINE), out
    assert re.search(r"^  nightly\s+nightly \(enabled\)", out, re.MULTILINE)
    assert re.search(r"^  lock\s+none$", out, re.MULTILINE)
    assert re.search(r"^  standby\s+none: a rollback starts its release afresh$", out, re.MULTILINE), out
    assert f"[deploy@vps] status: {live} live (v1), lock free" in out

    # A held lock is named (the info file says who), and freed when its holder ends.
    holder = subprocess.Popen(["ssh", "-F", str(site.client.path / "ssh_config"), "deploy@vps",
                               ("cd /srv/sum/acme && exec flock .lock sh -c "
                                "'echo $$ > /tmp/holder.pid; echo \"release v9 by test (pid $$)\" > .lock.info; exec sleep 60'")],
                              stdin=subprocess.DEVNULL)
    try:
        for _ in range(50):
            out = site.client.fab("status").stdout
            if "lock held" in out:
                break
            time.sleep(0.2)
        assert re.search(r"^  lock\s+release v9 by test \(pid \d+\)$", out, re.MULTILINE), out
    finally:
        site.host.ssh("kill $(cat /tmp/holder.pid); flock -w 10 /srv/sum/acme/.lock rm -f /srv/sum/acme/.lock.info", check=False)
        holder.wait(timeout=10)
    assert re.search(r"^  lock\s+none$", site.client.fab("status").stdout, re.MULTILINE)


def test_logs_show_gunicorn_lines(site):
    site.host.ssh("curl -sk --resolve acme.test:443:127.0.0.1 https://acme.test/health/ >/dev/null")
    out = site.client.fab("logs", "--lines", "5").stdout
    assert out.splitlines()[0] == ("[deploy@vps] logs app: sum-acme-gunicorn@blue.service, sum-acme-gunicorn@green.service, "
                                   "sum-acme-gunicorn@amber.service")
    entries = re.findall(r"^\w{3} \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \w+ sum-acme-gunicorn@(?:blue|green|amber)\.service\[\d+\]: ", out,
                         re.MULTILINE)
    assert len(entries) == 5, out
    # The access log names the client as Caddy saw it (here: curl on the host itself).
    assert re.search(r"\]: 127\.0\.0\.1 - - \[.*\] \"GET /health/ HTTP/1\.1\" 200 ", out), out
    assert "caddy" in site.client.fab("logs", "--service", "caddy", "--lines", "3").stdout
    for bad in (("--lines", "0"), ("--service", "nginx"), ("--service", "celery")):
        result = site.client.fab("logs", *bad, check=False)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and not result.stdout


def test_logs_follow_ends_cleanly_on_ctrl_c(site):
    # fab as an operator's shell runs it: Ctrl-C raises KeyboardInterrupt (even where this test runs with SIGINT ignored).
    process = subprocess.Popen([sys.executable, "-c", FAB_WITH_CTRL_C, "logs", "--follow", "--lines", "1"], cwd=site.client.path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    time.sleep(2)
    site.host.ssh("for i in 1 2 3 4; do curl -sk -o /dev/null --resolve acme.test:443:127.0.0.1 https://acme.test/; sleep 0.3; done")
    time.sleep(1)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert "Traceback" not in err and out.rstrip().endswith("[deploy@vps] logs: stopped")
    assert len(re.findall(r"sum-acme-gunicorn@\w+\.service\[\d+\]", out)) >= 3, out
    time.sleep(1)
    assert site.host.ssh("pgrep -u deploy journalctl", check=False).stdout.strip() == "", "journalctl still runs on the host"


def test_env_list_shows_keys_never_values(site):
    secret = site.host.ssh("sed -n 's/^DJANGO_SECRET_KEY=//p' /srv/sum/acme/.env").stdout.strip()
    password = site.host.ssh("sed -n 's/^DJANGO_DB_PASSWORD=//p' /srv/sum/acme/.env").stdout.strip()
    assert len(secret) >= 32 and len(password) >= 32
    out = site.client.fab("env.list")
    for key in ("DJANGO_SECRET_KEY", "DJANGO_DB_PASSWORD", "ALLOWED_HOSTS", "REDIS_URL"):
        assert re.search(rf"^  {key}=\*{{8}}", out.stdout, re.MULTILINE), out.stdout
    for value in (secret, password, "acme.test", "unix://"):
        assert value not in out.stdout + out.stderr


def test_env_set_and_unset(site):
    value = f"bar-{secrets.token_hex(8)}"
    before = site.env_state()

    site.host.ssh(SAMPLER)
    try:
        out = site.client.fab("env.set", f"FOO={value}")
    finally:
        site.host.ssh("kill $(cat /root/sampler.pid)")
    assert "FOO added" in out.stdout and "fab env.restart" in out.stdout and value not in out.stdout + out.stderr
    assert int(site.host.ssh("wc -l < /root/argv.log").stdout) > 10, "the argv sampler did not run"
    assert site.host.ssh(f"grep -cF {value} /root/argv.log", check=False).stdout.strip() == "0", "the value was in a command line"

    assert site.host.ssh(f"grep -x 'FOO={value}' /srv/sum/acme/.env").returncode == 0
    assert site.env_state().split()[:3] == ["600", "deploy", "deploy"] and site.env_state() != before
    assert re.search(r"^  FOO=\*{8}", site.client.fab("env.list").stdout, re.MULTILINE)
    assert not site.host.ssh("ls -A /srv/sum/acme | grep '^.env.sum-'", check=False).stdout

    # The same value again: nothing written.
    state = site.env_state()
    again = site.client.fab("env.set", f"FOO={value}")
    assert "FOO unchanged: nothing written" in again.stdout and site.env_state() == state

    # Generated secrets and keys from fabric.yaml are refused, before anything is touched.
    refused = site.client.fab("env.set", "DJANGO_SECRET_KEY=short", check=False)
    assert refused.returncode == 2 and "refused: DJANGO_SECRET_KEY is a generated secret" in refused.stderr and "--force" in refused.stderr
    assert "[deploy@vps]" not in refused.stdout
    synced = site.client.fab("env.unset", "ALLOWED_HOSTS", "--force", check=False)
    assert synced.returncode == 2 and "follows fabric.yaml" in synced.stderr
    assert site.env_state() == state

    out = site.client.fab("env.unset", "FOO")
    assert "FOO removed" in out.stdout
    assert "FOO" not in site.host.ssh("cat /srv/sum/acme/.env").stdout
    assert site.env_state().split()[:3] == ["600", "deploy", "deploy"]

    # The app still runs with the .env it started with; provision moves it onto this one (health-gated), once.
    converged = site.client.fab("provision").stdout
    assert re.search(r"changed\s+restart the app \(a free colour", converged), converged
    assert re.search(r"provision: 0 changed", site.client.fab("provision").stdout)


def test_env_set_restart_is_health_gated(site):
    before = site.live_colour()
    out = site.client.fab("env.set", "GREETING=hello", "--restart")
    after = site.live_colour()
    assert after != before and f"{after} started with the new .env and healthy, {before} stopping" in out.stdout
    assert site.unit_env("GREETING") == "hello"

    # A value that breaks the app: the new colour never takes over, the running one keeps serving.
    site.host.ssh("cp -p /srv/sum/acme/.env /root/env.good")
    try:
        bad = site.client.fab("env.set", "DJANGO_DB_PASSWORD=not-the-password", "--force", "--restart", check=False)
        assert bad.returncode == 1 and "the app did not take over with the new .env" in bad.stderr
        assert f"{after} still serves with the .env it started with" in bad.stderr and "not-the-password" not in bad.stderr
        site.host.ssh(HEALTHY)
        states = site.host.ssh("systemctl is-active sum-acme-gunicorn@blue sum-acme-gunicorn@green sum-acme-gunicorn@amber", check=False)
        assert states.stdout.split().count("active") == 1
    finally:
        site.host.ssh("cp -p /root/env.good /srv/sum/acme/.env")
    site.client.fab("env.unset", "GREETING", "--restart")
    assert site.unit_env("GREETING") == ""
    assert site.client.fab("check").returncode == 0


def test_provision_gives_a_site_released_before_live_sock_one(site):
    """Sites released by a version without live.sock get it from provision, naming the colour that runs `current`."""
    live = site.live_colour()
    site.host.ssh("rm /srv/sum/acme/live.sock")
    out = site.client.fab("provision")
    assert re.search(r"^  changed\s+live\.sock names the live colour", out.stdout, re.MULTILINE), out.stdout
    assert site.live_colour() == live
    site.host.ssh(HEALTHY)
    again = site.client.fab("provision")
    assert re.search(r"^  ok\s+live\.sock names the live colour", again.stdout, re.MULTILINE), again.stdout


def wait_for(host, command: str, timeout: float = 30.0) -> str:
    """Poll `command` on the host until it prints something; that output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = host.ssh(command, check=False).stdout.strip()
        if out:
            return out
        time.sleep(0.2)
    raise AssertionError(f"nothing from {command!r} within {timeout}s")


def test_schedules_run_as_the_app_on_the_release_they_began_on(site):
    host, stamp = site.host, "sum-acme-schedule-stamp.service"
    schedule = {"stamp": {"command": "stamp --seconds 6", "when": "daily"}, "broken": {"command": "stamp --fail", "when": "*:0/30"}}
    site.client.configure(site_config(site.host, health_timeout=10, schedule=schedule))
    try:
        out = site.client.fab("provision").stdout
        assert re.search(r"changed\s+schedule stamp timer enabled and running", out), out
        assert host.ssh("systemctl is-active sum-acme-schedule-stamp.timer sum-acme-schedule-broken.timer").stdout.split() == ["active"] * 2
        assert "OnCalendar=*:0/30" in host.ssh("systemctl cat sum-acme-schedule-broken.timer").stdout
        began_on = host.ssh("readlink -f /srv/sum/acme/current").stdout.strip()
        host.ssh(f"systemctl start --no-block {stamp}")
        pid = wait_for(host, f"pid=$(systemctl show -p MainPID --value {stamp}); [ \"$pid\" != 0 ] && echo $pid")
        assert host.ssh(f"stat -c %U /proc/{pid}").stdout.strip() == "sum-acme"
        assert host.ssh(f"readlink /proc/{pid}/cwd").stdout.strip() == began_on
        # Started again while it runs: no second run. A release meanwhile: the run ends on the release it began on.
        host.ssh(f"systemctl start --no-block {stamp}")
        site.client.fab("-H", "deploy@vps", "release", "--ref", "v1.2")
        assert host.ssh("readlink -f /srv/sum/acme/current").stdout.strip() != began_on
        wait_for(host, f"[ \"$(systemctl is-active {stamp})\" = inactive ] && echo done", timeout=60)
        runs = host.ssh(f"journalctl -u {stamp} -o cat --no-pager | grep '^stamp release='").stdout.splitlines()
        uid = host.ssh("id -u sum-acme").stdout.strip()
        assert runs == [f"stamp release={began_on} uid={uid}"], runs
        host.ssh("systemctl start sum-acme-schedule-broken.service", check=False)

        checked = site.client.fab("check", check=False)
        assert checked.returncode == 1 and "check failed: root@vps: schedule broken" in checked.stderr
        found = site.checks(checked.stdout)
        assert found["schedule stamp"][0] == "ok" and "succeeded" in found["schedule stamp"][1], checked.stdout
        assert found["schedule broken"][0] == "fail" and "FAILED" in found["schedule broken"][1], checked.stdout
        status = site.client.fab("status").stdout
        assert re.search(r"schedule\s+stamp: manage.py stamp --seconds 6, daily \(enabled\): last run .*: succeeded", status), status
        assert "stamp release=" in site.client.fab("logs", "--service", "schedule", "--lines", "20").stdout
    finally:
        site.client.configure(site_config(site.host, health_timeout=10))
        removed = site.client.fab("provision").stdout
    assert re.search(r"changed\s+no other schedules", removed), removed
    assert host.ssh("ls /etc/systemd/system | grep -c schedule", check=False).stdout.strip() == "0"


def test_manage_runs_in_the_live_release_as_the_app_with_its_environment(site):
    fab = [sys.executable, "-m", "fabric", "manage", "--"]
    # From a pipe: the command reads this stdin.
    piped = subprocess.run([*fab, "shell"], cwd=site.client.path, input="from notes.models import Note\nprint('notes:', Note.objects.count())\n",
                           capture_output=True, text=True, timeout=300, check=False)
    assert piped.returncode == 0 and re.search(r"^notes: \d+$", piped.stdout, re.MULTILINE), piped
    # What it writes has the owner, group and mode of what the app writes (its user, Caddy's group through media, umask 027).
    site.client.fab("manage", "--", "shell", "-c", "import os; open(os.environ['DJANGO_MEDIA_ROOT'] + '/by-manage.txt', 'w').write('m')")
    assert site.host.ssh("stat -c '%a %U %G' /srv/sum/acme/media/by-manage.txt").stdout.split() == ["640", "sum-acme", "caddy"]
    whoami = site.client.fab("manage", "--", "shell", "-c", "import os; print('uid', os.getuid(), os.getcwd())").stdout
    live = site.host.ssh("readlink -f /srv/sum/acme/current").stdout.strip()
    assert f"uid {site.host.ssh('id -u sum-acme').stdout.strip()} {live}" in whoami, whoami
    # From a terminal: interactive (a pty end to end).
    command = " ".join(shlex.quote(a) for a in [*fab, "shell", "-c", "import sys; print('tty', sys.stdin.isatty())"])
    tty = subprocess.run(["script", "-qec", command, "/dev/null"], cwd=site.client.path, capture_output=True, text=True, timeout=300, check=False)
    assert tty.returncode == 0 and "tty True" in tty.stdout, tty
    # Its exit status is fab's; with nothing after --, one line and nothing runs.
    failed = site.client.fab("manage", "--", "nosuchcommand", check=False)
    assert failed.returncode != 0 and "Unknown command" in failed.stdout + failed.stderr
    bare = site.client.fab("manage", check=False)
    assert bare.returncode == 2 and bare.stderr.strip() == "give the management command after --: fab manage -- createsuperuser"
