"""release and rollback on real booted hosts: health-gated, zero dropped requests, self-healing."""

import base64
import hashlib
import io
import json
import re
import shlex
import signal
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass

import pytest
from e2e_support import live_colour, site_config
from site_repo import HEADINGS, build_site_repo

from sum_tasks.configuration import COLOURS
from sum_tasks.testing.client import Client, make_client
from sum_tasks.testing.hosts import TestHost
from sum_tasks.testing.load import Load, health_through_caddy

pytestmark = pytest.mark.e2e
MIN_RATE = 20


@dataclass
class Deployed:
    host: TestHost
    client: Client
    tags: dict[str, str]

    def health(self) -> dict:
        status, body = health_through_caddy(self.host.ip, "acme.test")
        assert status == 200, body
        return body

    def live_sha(self) -> str:
        return self.health()["version"]["git_sha"]

    def load(self) -> Load:
        return Load(self.host.ip, "acme.test", rate=40)

    def release(self, ref: str, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.client.fab("-H", "deploy@vps", "release", "--ref", ref, *extra, check=check)

    def colours(self) -> tuple[str, str, dict[str, str]]:
        """The live colour (as Caddy's live.sock names it), the standby ('' if none) and each colour's state, once none is stopping."""
        live = live_colour(self.host)
        linked = self.host.ssh("ls /srv/sum/acme/colours").stdout.split()
        standby = [c for c in COLOURS if c in linked and c != live]
        assert len(standby) <= 1, linked
        deadline = time.monotonic() + 30
        while True:
            states = self.host.ssh(f"systemctl is-active {' '.join(f'sum-acme-gunicorn@{c}' for c in COLOURS)}", check=False).stdout.split()
            if "deactivating" not in states or time.monotonic() > deadline:
                return live, "".join(standby), dict(zip(COLOURS, states))
            time.sleep(0.1)

    def colour_sha(self, colour: str) -> str:
        """The git SHA `/health/` reports on one colour's own socket, bypassing Caddy."""
        out = self.host.ssh(f"curl -s --unix-socket /run/sum/acme/{colour}.sock http://acme.test/health/").stdout
        return json.loads(out)["version"]["git_sha"]

    def main_pid(self, colour: str) -> str:
        return self.host.ssh(f"systemctl show -p MainPID --value sum-acme-gunicorn@{colour}").stdout.strip()


def assert_no_drops(load: Load) -> None:
    assert load.total / load.seconds >= MIN_RATE, load.summary()
    assert load.failed == 0, load.summary()


@pytest.fixture(scope="module", params=["bookworm", "trixie"])
def site(request, host_factory, tmp_path_factory):
    host = host_factory(suite=request.param)
    root = tmp_path_factory.mktemp(f"release-{request.param}")
    tags = build_site_repo(root / "site")
    client = make_client(root / "site", site_config(host), {"vps": (host, "root")})
    client.fab("provision")
    subprocess.run(["git", "clone", "-q", "--bare", str(root / "site"), str(root / "site.git")], check=True)
    tar = subprocess.run(["tar", "-C", str(root), "-c", "site.git"], capture_output=True, check=True).stdout
    subprocess.run(["ssh", "-F", str(root / "site" / "ssh_config"), "vps",
                    "mkdir -p /srv/git && tar -x -C /srv/git && chown -R deploy: /srv/git"], input=tar, check=True)
    deployed = Deployed(host, client, tags)
    first = deployed.release("v1")
    assert "built a new venv" in first.stdout
    assert deployed.live_sha() == tags["v1"]
    return deployed


def test_good_release_under_load_reuses_the_venv(site):
    venvs = site.host.ssh("ls /srv/sum/acme/venvs").stdout
    with site.load() as load:
        out = site.release("v1.2")
    assert_no_drops(load)
    assert site.live_sha() == site.tags["v1.2"]
    assert "requirements unchanged: venv reused, nothing downloaded" in out.stdout
    assert site.host.ssh("ls /srv/sum/acme/venvs").stdout == venvs
    page = site.host.ssh("curl -sk --resolve acme.test:443:127.0.0.1 https://acme.test/").stdout
    assert HEADINGS["v1.2"] in page
    assert re.search(r"\[deploy@vps\] release v1.2: \S+ live \(", out.stdout)
    # Caddy's live.sock names the new colour; the old one stays up on v1 as the warm standby.
    live, standby, states = site.colours()
    assert sorted(states.values()) == ["active", "active", "inactive"] and states[live] == states[standby] == "active"
    assert site.colour_sha(live) == site.tags["v1.2"] and site.colour_sha(standby) == site.tags["v1"]
    site.host.ssh(f"systemd-analyze verify /etc/systemd/system/sum-acme-gunicorn@{live}.service")
    assert site.host.ssh("stat -c '%a %U' /run/sum/acme/*.sock").stdout.split() == ["666", "sum-acme"] * 2
    pid = site.host.ssh(f"systemctl show -p MainPID --value sum-acme-gunicorn@{live}.service").stdout.strip()
    assert site.host.ssh(f"stat -c %U /proc/{pid}").stdout.strip() == "sum-acme"


HOLD_TABLE = ('set -a; . /srv/sum/acme/.env; set +a; export PGPASSWORD="$DJANGO_DB_PASSWORD"; '
              'psql -X -q -h "$DJANGO_DB_HOST" -p "$DJANGO_DB_PORT" -U "$DJANGO_DB_USER" -d "$DJANGO_DB_NAME" '
              '-c BEGIN -c "LOCK TABLE notes_note IN ACCESS SHARE MODE" -c "SELECT pg_sleep(45)"')
LOCKS = ("runuser -u postgres -- psql -XqAt -d acme -c \"SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
         "WHERE c.relname = 'notes_note' AND l.granted AND l.pid IN (SELECT pid FROM pg_stat_activity WHERE query LIKE '%pg_sleep(45)%')\"")


def test_a_migration_stuck_behind_a_lock_fails_fast_and_the_old_release_serves(site):
    before = site.live_sha()
    # A transaction holding the table v2's migration alters, as a long pg_dump holds every table.
    holder = subprocess.Popen(["ssh", "-F", str(site.client.path / "ssh_config"), "deploy@vps", HOLD_TABLE],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while site.host.ssh(LOCKS).stdout.strip() in ("", "0"):
            assert time.monotonic() < deadline, "the lock holder never held the table"
            time.sleep(0.2)
        started = time.monotonic()
        with site.load() as load:
            out = site.release("v2", check=False)
        assert out.returncode == 1 and "lock timeout" in out.stdout + out.stderr, out.stdout + out.stderr
        assert time.monotonic() - started < 40
    finally:
        holder.kill()
        site.host.ssh("runuser -u postgres -- psql -XqAt -c \"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE query LIKE '%pg_sleep(45)%' AND pid <> pg_backend_pid()\"", check=False)
    assert_no_drops(load)
    assert site.live_sha() == before


def test_pending_migrations_take_a_backup_first(site):
    out = site.release("v2")
    assert "1 pending migrations" in out.stdout
    assert site.live_sha() == site.tags["v2"]
    records = [json.loads(line) for line in site.host.ssh("cat /srv/sum/acme/releases.jsonl").stdout.splitlines()]
    backup = records[-1]["backup"]
    assert records[-1]["result"] == "good" and records[-1]["sha"] == site.tags["v2"]
    assert backup.startswith("/srv/sum/acme/backups/") and backup in out.stdout
    assert site.host.ssh(f"gzip -t {backup} && zcat {backup} | grep -c 'CREATE TABLE'").stdout.strip() != "0"


@pytest.mark.parametrize("tag,step", [
    ("bad-migration", "migrate and collectstatic"),
    ("bad-import", "and wait for /health/"),
    ("bad-health", "and wait for /health/"),
    ("bad-urls", "and wait for /health/"),
    ("no-such-tag", "fetch no-such-tag"),
])
def test_failing_release_leaves_the_old_one_serving(site, tag, step):
    before = site.live_sha()
    live_before, standby_before, states_before = site.colours()
    with site.load() as load:
        out = site.release(tag, check=False)
    assert_no_drops(load)
    assert out.returncode != 0
    assert re.search(rf"FAILED on deploy@vps at step '[^']*{re.escape(step)}[^']*'", out.stderr), out.stderr
    assert "the previous release is still serving" in out.stderr or tag == "no-such-tag"
    assert site.live_sha() == before
    # The live colour serves on, the warm standby is untouched, and the colour the failed release started is stopped.
    assert site.colours() == (live_before, standby_before, states_before)
    last = json.loads(site.host.ssh("tail -n 1 /srv/sum/acme/releases.jsonl").stdout)
    if tag != "no-such-tag":
        assert last["result"].startswith("failed") and last["ref"] == tag


def test_changed_requirements_build_a_new_venv_beside_the_live_one(site):
    live_venv = site.host.ssh("readlink /srv/sum/acme/current/.venv").stdout.strip()
    out = site.release("v3-reqs")
    assert "built a new venv" in out.stdout
    assert site.live_sha() == site.tags["v3-reqs"]
    new_venv = site.host.ssh("readlink /srv/sum/acme/current/.venv").stdout.strip()
    assert new_venv != live_venv
    assert site.host.ssh(f"{new_venv}/bin/pip show humanize", check=False).returncode == 0
    assert site.host.ssh(f"{live_venv}/bin/pip show humanize", check=False).returncode != 0


def test_rollback_under_load_is_instant_and_health_gated(site):
    live, standby, _ = site.colours()
    assert site.colour_sha(standby) == site.tags["v2"]
    pids = {colour: site.main_pid(colour) for colour in (live, standby)}
    with site.load() as load:
        out = site.client.fab("rollback")
    assert_no_drops(load)
    assert site.live_sha() == site.tags["v2"]
    assert "python environment" not in out.stdout and "migrate" not in out.stdout.replace("database migrations", "")
    # The warm standby took over without a restart, and the colour it replaced stays up as the next standby.
    assert f"switch to {standby} (warm standby) once /health/ answers 200" in out.stdout and "start " not in out.stdout
    assert site.colours()[0] == standby and {colour: site.main_pid(colour) for colour in pids} == pids
    assert site.colour_sha(live) == site.tags["v3-reqs"]


def test_rollback_past_migrations_needs_force(site):
    refused = site.client.fab("rollback", "--to", "v1", check=False)
    assert refused.returncode != 0
    assert "migrations" in refused.stderr and "notes 0002" in refused.stderr
    assert "/srv/sum/acme/backups/" in refused.stderr
    assert site.live_sha() == site.tags["v2"]
    live, standby, _ = site.colours()
    forced = site.client.fab("rollback", "--to", "v1", "--force")
    assert site.live_sha() == site.tags["v1"]
    # v1 is not the warm standby: a free colour starts it, the old live one becomes the standby, the old standby stops.
    assert "start " in forced.stdout and f", {live} kept as the warm standby, {standby} stopping" in forced.stdout
    assert site.colours()[1] == live and sorted(site.colours()[2].values()) == ["active", "active", "inactive"]
    site.release("v2")


def test_second_release_is_refused_and_a_killed_one_heals(site):
    argv = [sys.executable, "-m", "fabric", "-H", "deploy@vps", "release", "--ref", "v1.2"]
    first = subprocess.Popen(argv, cwd=site.client.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while site.host.ssh("test -s /srv/sum/acme/.lock.info", check=False).returncode != 0:
            assert time.monotonic() < deadline and first.poll() is None, "the first release never took the lock"
            time.sleep(0.05)
        second = site.release("v1.2", check=False)
        assert second.returncode != 0
        assert "is locked: release v1.2 by " in second.stderr and " since " in second.stderr
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.wait()
    with site.load() as load:
        site.release("v1.2")
    assert_no_drops(load)
    assert site.live_sha() == site.tags["v1.2"]
    assert sorted(site.colours()[2].values()) == ["active", "active", "inactive"]
    leftovers = site.host.ssh("ls -a /srv/sum/acme/releases; ls /srv/sum/acme/releases/*/.building", check=False).stdout
    assert ".incoming" not in leftovers and ".building" not in leftovers


def test_unlock_frees_a_lock_whose_session_lingers(site):
    # A release stuck in a hook stands for a task whose operator is gone but whose SSH session lingers.
    site.client.configure({**site_config(site.host), "hooks": {"before_migrate": ["sleep 117"]}})
    argv = [sys.executable, "-m", "fabric", "-H", "deploy@vps", "release", "--ref", "v1.2"]
    stuck = subprocess.Popen(argv, cwd=site.client.path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while site.host.ssh("pgrep -u deploy -x sleep", check=False).returncode != 0:
            assert time.monotonic() < deadline and stuck.poll() is None, "the release never reached its hook"
            time.sleep(0.1)
        out = site.client.fab("unlock")
        assert re.search(r"\[deploy@vps\] ended: release v1.2 by \S+ since [\d-]+ [\d:]+Z \(pid \d+\)", out.stdout), out.stdout
        assert site.host.ssh("flock -n /srv/sum/acme/.lock true", check=False).returncode == 0
        assert "[deploy@vps] not locked" in site.client.fab("unlock").stdout
    finally:
        stuck.kill()
        stuck.wait()
        site.host.ssh("pkill -u deploy -x sleep", check=False)
        site.client.configure(site_config(site.host))
    with site.load() as load:
        out = site.release("v1.2")
    assert_no_drops(load)
    assert site.live_sha() == site.tags["v1.2"] and "removed half-built" in out.stdout


def test_hooks_run_and_a_failing_pre_switch_hook_fails_the_release(site):
    hooks = {"before_migrate": ["test -f manage.py && echo \"$GIT_SHA\" > /tmp/hook-sha"],
             "after_switch": ["echo switched >> /tmp/hook-log"]}
    site.client.configure({**site_config(site.host), "hooks": hooks})
    out = site.release("v1.2")
    assert "hook before_migrate" in out.stdout and "hook after_switch" in out.stdout
    assert site.host.ssh("cat /tmp/hook-sha").stdout.strip() == site.tags["v1.2"]
    assert site.host.ssh("cat /tmp/hook-log").stdout.strip() == "switched"
    site.client.configure({**site_config(site.host), "hooks": {**hooks, "before_switch": ["false"],
                                                                "after_failure": ["echo failed >> /tmp/hook-log"]}})
    with site.load() as load:
        failed = site.release("v2", check=False)
    assert_no_drops(load)
    assert failed.returncode != 0 and "at step 'hook before_switch'" in failed.stderr
    assert site.live_sha() == site.tags["v1.2"]
    assert site.host.ssh("cat /tmp/hook-log").stdout.split() == ["switched", "failed"]
    site.client.configure(site_config(site.host))
    site.release("v2")


def test_production_settings_with_ssl_redirect_release_and_roll_back(site):
    with site.load() as load:
        out = site.release("secure")
    assert_no_drops(load)
    assert site.live_sha() == site.tags["secure"], out.stdout
    live, standby, _ = site.colours()
    # The app redirects a request that does not say it came over HTTPS: the health gate passed because it sends what Caddy sends.
    bare = site.host.ssh(f"curl -s -o /dev/null -w '%{{http_code}} %{{redirect_url}}' --unix-socket /run/sum/acme/{live}.sock "
                         "http://acme.test/health/").stdout
    assert bare == "301 https://acme.test/health/"
    # Caddy adds its security headers only where the app set none: the app's stricter ones reach the browser unchanged.
    assert headers(site)["strict-transport-security"] == "max-age=31536000; includeSubDomains; preload"
    assert headers(site)["x-frame-options"] == "DENY"
    with site.load() as load:
        back = site.client.fab("rollback")
    assert_no_drops(load)
    assert site.live_sha() == site.tags["v2"] and f"switch to {standby} (warm standby)" in back.stdout
    # v2 sets no HSTS (Caddy's default is added) but Django's own X-Frame-Options DENY (kept, not weakened to SAMEORIGIN).
    assert headers(site)["strict-transport-security"] == "max-age=31536000" and headers(site)["x-frame-options"] == "DENY"


def headers(site) -> dict[str, str]:
    """The response headers of / through Caddy, names in lower case."""
    out = site.host.ssh("curl -sk -o /dev/null -D - --resolve acme.test:443:127.0.0.1 https://acme.test/").stdout
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines()[1:]) if v}


def test_server_fetches_the_repo_itself(site):
    site.client.configure({**site_config(site.host), "repo_url": "file:///srv/git/site.git"})
    out = site.client.fab("release", "--ref", "v2", "--source", "server")
    assert "fetch v2 (server)" in out.stdout
    assert site.live_sha() == site.tags["v2"]
    assert site.host.ssh("test -d /srv/sum/acme/repo.git").returncode == 0


def test_releases_lists_the_records(site):
    out = site.client.fab("releases").stdout
    live = [line for line in out.splitlines() if line.startswith(" * ")]
    assert len(live) == 1 and site.tags["v2"][:12] in live[0]
    assert "failed: " in out


def test_bad_input_is_refused_before_connecting(site):
    for argv, message in ((("-H", "deploy@vps", "release", "--ref", "v1;id"), "not a valid git ref"),
                          (("-H", "deploy@vps", "release"), "release needs --ref"),
                          (("release", "--ref", "v1", "--source", "ftp"), "--source must be one of")):
        out = site.client.fab(*argv, check=False)
        assert out.returncode != 0 and message in out.stderr and "[deploy@vps]" not in out.stdout


def wheel(value: str) -> bytes:
    """A wheel of package `sumdemo` 0.1 whose module holds `value`: rebuilt with another value, same name and version."""
    files = {
        "sumdemo/__init__.py": f"VALUE = {value!r}\n",
        "sumdemo-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: sumdemo\nVersion: 0.1\n",
        "sumdemo-0.1.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: the tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=').decode()},"
                     f"{len(text.encode())}\n" for name, text in files.items())
    files["sumdemo-0.1.dist-info/RECORD"] = record + "sumdemo-0.1.dist-info/RECORD,,\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(zipfile.ZipInfo(name, (2026, 1, 1, 0, 0, 0)), text)
    return buffer.getvalue()


def test_a_local_wheel_in_requirements_installs_and_a_rebuilt_one_gets_a_new_venv(site):
    repo = site.client.path
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
    name = "wheels/sumdemo-0.1-py3-none-any.whl"

    def commit(tag: str, value: str, touch: str = "") -> None:
        (repo / "wheels").mkdir(exist_ok=True)
        (repo / name).write_bytes(wheel(value))
        if touch:
            (repo / "NOTES.md").write_text(touch)
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-q", "-m", tag], check=True)
        subprocess.run([*git, "tag", tag], check=True)

    subprocess.run([*git, "checkout", "-q", "-b", f"wheels-{site.host.suite}", "v2"], check=True)
    requirements = (repo / "requirements.txt").read_text()
    (repo / "requirements.txt").write_text(requirements + f"./{name}\n")
    value = "import sumdemo; print(sumdemo.VALUE)"
    try:
        commit(f"wheel-one-{site.host.suite}", "one")
        out = site.release(f"wheel-one-{site.host.suite}", "--source", "local").stdout
        assert "built a new venv" in out, out
        assert site.host.ssh(f"/srv/sum/acme/current/.venv/bin/python -c {shlex.quote(value)}").stdout.strip() == "one"
        # The same wheel name and version, rebuilt: requirements.txt is unchanged, the venv is not.
        commit(f"wheel-two-{site.host.suite}", "two")
        out = site.release(f"wheel-two-{site.host.suite}", "--source", "local").stdout
        assert "built a new venv" in out, out
        assert site.host.ssh(f"/srv/sum/acme/current/.venv/bin/python -c {shlex.quote(value)}").stdout.strip() == "two"
        # Nothing the requirements name changed: the venv is reused.
        commit(f"wheel-three-{site.host.suite}", "two", touch="notes\n")
        assert "venv reused" in site.release(f"wheel-three-{site.host.suite}", "--source", "local").stdout
    finally:
        subprocess.run([*git, "checkout", "-q", "-f", "main"], check=True)
