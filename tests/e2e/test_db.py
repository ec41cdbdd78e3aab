"""db.backup, db.restore, db.list, db.rehearse and the nightly timer on one booted Debian 12 host with a live release."""

import hashlib
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest
from e2e_support import site_config
from site_repo import build_site_repo

from sum_tasks.testing.client import Client, make_client
from sum_tasks.testing.hosts import TestHost
from sum_tasks.testing.load import Load

pytestmark = pytest.mark.e2e
BACKUPS = "/srv/sum/acme/backups"
KEPT, COPY = "acme-before-restore", "restore-acme"
# Requests/s answered at least, of the 40 sent: the restore's own work (the load, Django's migrate --check, the safety
# dump) shares the host's two cores with the app, which then answers more slowly than during a release.
MIN_RATE = 10
# Samples every process's argv 50 times a second; records db tool sightings, and any sample holding the password.
SAMPLER = """\
sed -n 's/^DJANGO_DB_PASSWORD=//p' /srv/sum/acme/.env > /root/pw
sep=$(printf '\\001')
while :; do
    s=$(cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' '\\1')
    printf '%s' "$s" | grep -qF -f /root/pw && echo LEAK >> /root/leak.log
    printf '%s' "$s" | grep -oE "pg_dump${sep}--format=plain|psql${sep}-X${sep}-q${sep}-v${sep}ON_ERROR_STOP=1" | tr '\\1' ' ' >> /root/seen.log
    sleep 0.02
done
"""
SCRIPT = "/usr/local/bin/sum-acme-db"
HOLD_LOCK = ("flock -n /srv/sum/acme/.lock sh -c 'echo \"release by tester@ci since now (pid $$)\" > /srv/sum/acme/.lock.info; "
             "echo HELD $$; exec sleep 60'")
NAME = re.compile(r"acme_db_\d{8}T\d{6}Z(?:-[a-z0-9-]+)?\.sql\.(?:gz|zst)")
DATA_SQL = """
CREATE TABLE shop_customer (id serial PRIMARY KEY, name text NOT NULL, email text UNIQUE);
CREATE TABLE shop_order (id bigserial PRIMARY KEY, customer_id int REFERENCES shop_customer, total numeric(10,2),
                         note text, created timestamptz NOT NULL DEFAULT '2026-01-01T00:00:00Z');
CREATE INDEX shop_order_created ON shop_order (created);
INSERT INTO shop_customer (name, email) SELECT 'customer ' || g, 'c' || g || '@example.test' FROM generate_series(1, 500) g;
INSERT INTO shop_order (customer_id, total, note)
  SELECT 1 + g % 500, (g % 997) / 7.0, md5(g::text) || E'\\ttab and ''quote'' ' || repeat('x', g % 50) FROM generate_series(1, 40000) g;
INSERT INTO notes_note (title, body, created_at) SELECT 'note ' || g, 'body ' || md5(g::text), '2026-01-01' FROM generate_series(1, 300) g;
"""
SNAPSHOT_SQL = """SELECT c.relname, (xpath('/row/n/text()', query_to_xml(format(
  'SELECT count(*) || '':'' || coalesce(md5(string_agg(t::text, ''|'' ORDER BY t::text)), ''-'') AS n FROM public.%I t', c.relname),
  false, true, '')))[1]::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 1"""


class Site:
    """The booted, provisioned host with release v1 live, its client repo, and every fab output so far."""

    def __init__(self, host: TestHost, client: Client) -> None:
        self.host, self.client = host, client
        self.outputs: list[str] = []

    def fab(self, *args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        result = self.client.fab(*args, check=check, env=env)
        self.outputs.append(result.stdout + result.stderr)
        return result

    def psql(self, sql: str, db: str = "") -> str:
        """`sql` as the site's role, in the live database or in `db`."""
        target = shlex.quote(db) if db else '"$DJANGO_DB_NAME"'
        script = ('set -a; . /srv/sum/acme/.env; set +a; export PGPASSWORD="$DJANGO_DB_PASSWORD"; '
                  'psql -X -q -At -v ON_ERROR_STOP=1 -h "$DJANGO_DB_HOST" -p "$DJANGO_DB_PORT" -U "$DJANGO_DB_USER" '
                  f'-d {target} -f -')
        return self.host.ssh(script, user="deploy", input=sql).stdout

    def snapshot(self, db: str = "") -> dict[str, str]:
        """Every table's row count and the md5 of its rows, and the indexes (of the live database, or of `db`)."""
        tables = dict(line.split("|", 1) for line in self.psql(SNAPSHOT_SQL, db).splitlines())
        tables["indexes"] = self.psql("SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE schemaname = 'public'",
                                      db).strip()
        return tables

    def databases(self) -> set[str]:
        return set(self.host.ssh("runuser -u postgres -- psql -XAtc 'SELECT datname FROM pg_database'").stdout.split())

    def main_pids(self) -> dict[str, str]:
        """The main process of each gunicorn colour that runs: a restart gives a new one."""
        return {c: self.host.ssh(f"systemctl show -p MainPID --value sum-acme-gunicorn@{c}").stdout.strip() for c in self.live_colours()}

    def load(self) -> Load:
        # Enough threads to keep the rate while requests wait out the switch in Caddy.
        return Load(self.host.ip, "acme.test", rate=40, workers=16)

    def backups(self) -> list[str]:
        return sorted(n for n in self.host.ssh(f"ls {BACKUPS}").stdout.split() if NAME.fullmatch(n))

    def healthy(self) -> bool:
        code = self.host.ssh("curl -sk -o /dev/null -w '%{http_code}' --resolve acme.test:443:127.0.0.1 https://acme.test/health/",
                             check=False).stdout
        return code == "200"

    def live_colours(self) -> list[str]:
        states = self.host.ssh("systemctl is-active sum-acme-gunicorn@blue sum-acme-gunicorn@green", check=False).stdout.split()
        return [c for c, s in zip(("blue", "green"), states) if s == "active"]


@pytest.fixture(scope="module")
def site(host_factory, tmp_path_factory):
    host = host_factory(suite="bookworm")
    root = tmp_path_factory.mktemp("db")
    build_site_repo(root / "site")
    client = make_client(root / "site", site_config(host), {"vps": (host, "root")})
    client.fab("provision")
    client.fab("-H", "deploy@vps", "release", "--ref", "v1")
    s = Site(host, client)
    s.psql(DATA_SQL)
    host.ssh("cat > /root/sampler.sh", input=SAMPLER)
    host.ssh("nohup sh /root/sampler.sh >/dev/null 2>&1 & echo $! > /root/sampler.pid")
    yield s
    host.ssh("kill $(cat /root/sampler.pid)", check=False)


def test_backup_is_verified_and_downloaded(site):
    out = site.fab("db.backup", "--download").stdout
    path = re.search(rf"changed\s+site backup \(\S+\)\s+({BACKUPS}/\S+), ([\d.]+ [KM]B) in [\d.]+s", out)
    assert path, out
    remote = path.group(1).rstrip(",")
    assert "verified: gzip stream whole, dump complete, sha256" in out
    assert site.host.ssh(f"stat -c '%a %U' {remote}").stdout.split() == ["600", "deploy"]
    assert site.host.ssh(f"cd {BACKUPS} && sha256sum -c {Path(remote).name}.sha256").returncode == 0
    assert site.host.ssh(f"zcat {remote} | tail -n 5 | grep -c 'PostgreSQL database dump complete'").stdout.strip() == "1"
    local = site.client.path / "backups" / "acme" / Path(remote).name
    remote_sha = site.host.ssh(f"sha256sum < {remote}").stdout.split()[0]
    assert hashlib.sha256(local.read_bytes()).hexdigest() == remote_sha
    assert (local.parent / f"{local.name}.sha256").read_text().split()[0] == remote_sha
    assert (site.client.path / "backups" / ".gitignore").read_text().endswith("*\n")
    assert not site.host.ssh(f"ls -A {BACKUPS} | grep partial", check=False).stdout


def test_round_trip_restores_the_data_exactly(site):
    before = site.snapshot()
    name = Path(re.search(rf"{BACKUPS}/(\S+?),", site.fab("db.backup").stdout).group(1)).name
    site.psql("DELETE FROM shop_order WHERE id % 3 = 0; UPDATE shop_customer SET name = 'changed';"
              "DROP INDEX shop_order_created; CREATE TABLE added_later (i int); INSERT INTO notes_note (title, body, created_at) "
              "VALUES ('new', '', now());")
    assert site.snapshot() != before
    colours = site.live_colours()
    out = site.fab("db.restore", "--file", name, "--i-know-this-will-overwrite").stdout
    after = site.snapshot()
    assert after == before
    assert "safety backup /srv/sum/acme/backups/acme_db_" in out and "-pre-restore.sql.gz" in out
    assert "restored in" in out and "one transaction" in out
    assert re.search(r"/health/ HTTP 200 ok .*on (blue|green)", out), out
    assert f"stopped sum-acme-gunicorn@{colours[0]}.service" in out
    assert site.live_colours() == colours and site.healthy()
    assert f"renamed acme to {KEPT} and {COPY} to acme in one transaction" in out
    assert KEPT in site.databases() and COPY not in site.databases()


def test_restore_under_load_serves_until_the_switch_and_keeps_the_old_database(site):
    name = Path(re.search(rf"{BACKUPS}/(\S+?),", site.fab("db.backup").stdout).group(1)).name
    backed_up = site.snapshot()
    site.psql("UPDATE shop_customer SET name = 'after the backup'; DELETE FROM notes_note WHERE id % 2 = 0;"
              "INSERT INTO shop_order (customer_id, total, note) VALUES (1, 1, 'after the backup')")
    replaced = site.snapshot()
    pids = site.main_pids()
    with site.load() as load:
        time.sleep(1)
        started = time.monotonic()
        out = site.fab("db.restore", "--file", name, "--i-know-this-will-overwrite").stdout
        took = time.monotonic() - started
        time.sleep(1)
    down = float(re.search(r"app down ([\d.]+)s", out).group(1))
    print(f"\ndb.restore under load ({took:.1f}s in all): {load.downtime()}; app down {down:.2f}s by the script's clock")
    assert load.total / load.seconds >= MIN_RATE, load.summary()
    # The backup is live, what it replaced is kept whole under the safety name, and dumped too.
    assert site.snapshot() == backed_up and site.snapshot(KEPT) == replaced
    assert COPY not in site.databases()
    dump = re.search(rf"safety backup ({BACKUPS}/acme_db_\S+-pre-restore\.sql\.gz) \([\d.]+ [KM]B, verified\)", out)
    assert dump and site.host.ssh(f"cd {BACKUPS} && sha256sum -c {Path(dump.group(1)).name}.sha256").returncode == 0
    assert site.healthy() and site.main_pids().keys() == pids.keys() and site.main_pids() != pids
    # The app stopped only for the switch: the load, the checks and the safety dump ran while it served.
    steps = [line.split()[1] for line in out.splitlines() if re.match(r"  (ok|changed|WARNING) ", line)]
    assert steps.index("restore") < steps.index("tables") < steps.index("migrate") < steps.index("switch") < steps.index("safety")
    # What visitors saw is the switch and nothing else: no good answer for about as long as the app was down (Caddy
    # holds requests up to 5 s, so a short switch fails none), and that is a small part of the whole restore.
    assert load.longest_gap() < down + 2 and load.failure_run()[1] < down + 1 and down < took / 2, (load.downtime(), down, took)


def test_a_restore_meeting_a_running_backup_waits_with_the_site_up(site):
    name = site.backups()[-1]
    colours = site.live_colours()
    # The backups' lock, held as a running backup holds it, for 15 s: longer than the restore takes to load and check its
    # copy, so its switch meets it.
    site.host.ssh("nohup flock /srv/sum/acme/backups/.backup.lock sleep 15 >/dev/null 2>&1 </dev/null &", user="deploy")
    time.sleep(0.5)
    started = time.monotonic()
    restore = subprocess.Popen([site.client.python, "-m", "fabric", "db.restore", "--file", name, "--i-know-this-will-overwrite"],
                               cwd=site.client.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    while time.monotonic() - started < 13:
        assert site.live_colours() == colours, "the app stopped while the restore waited for the backup"
        time.sleep(0.3)
    out = restore.communicate(timeout=300)[0]
    assert restore.returncode == 0, out
    assert time.monotonic() - started > 5 and "waited for a running backup to finish, the app still serving" in out
    assert site.live_colours() == colours and site.healthy()


def test_broken_files_are_refused_or_rolled_back(site):
    good = site.backups()[-1]
    before = site.snapshot()
    site.host.ssh(
        f"cd {BACKUPS} && s=$(stat -c %s {good}) && "
        f"head -c $((s / 2)) {good} > half.sql.gz && "
        f"cp {good} garbage.sql.gz && dd if=/dev/urandom of=garbage.sql.gz bs=65536 count=1 seek=$((s / 131072)) conv=notrunc 2>/dev/null && "
        f": > empty.sql.gz && zcat {good} > plain.sql.gz && "
        f"zcat {good} | sed '0,/^COPY public.shop_order /s//SELEC broken;\\n&/' | gzip > sqlerror.sql.gz && "
        "chown deploy: *.sql.gz", user="root")
    assert "SELEC broken" in site.host.ssh(f"zcat {BACKUPS}/sqlerror.sql.gz").stdout
    expected = {"half": "corrupt or truncated", "garbage": "corrupt or truncated", "empty": "is empty",
                "plain": "neither gzip nor zstd", "sqlerror": "failed and was rolled back"}
    pids = site.main_pids()
    for case, message in expected.items():
        with site.load() as load:
            result = site.fab("db.restore", "--file", f"{case}.sql.gz", "--i-know-this-will-overwrite", check=False)
        assert result.returncode != 0 and message in result.stderr, (case, result.stderr)
        if case == "sqlerror":
            # It failed loading into the copy, while the app served on: the copy is dropped, the app was never stopped.
            assert 'syntax error at or near "SELEC"' in result.stderr and f"drop {COPY}" in result.stdout
        else:
            assert "refused:" in result.stderr and "nothing was touched" in result.stderr
        assert "safety backup" not in result.stdout and "app back up" not in result.stdout and "switch" not in result.stdout
        assert site.snapshot() == before, case
        assert site.healthy() and site.main_pids() == pids, case
        assert COPY not in site.databases()
        # No downtime at all: not one request failed, and no gunicorn was restarted (same main processes).
        print(f"\n{case}: {load.downtime()}")
        assert load.failed == 0, (case, load.downtime())


def test_runbook_pipeline_backup_restores_from_a_local_file(site, tmp_path):
    site.host.ssh("set -a; . /srv/sum/acme/.env; set +a; export PGPASSWORD=\"$DJANGO_DB_PASSWORD\"; umask 077; "
                  "pg_dump -h \"$DJANGO_DB_HOST\" -p \"$DJANGO_DB_PORT\" -U \"$DJANGO_DB_USER\" --format=plain --no-owner --no-privileges --clean --if-exists "
                  "\"$DJANGO_DB_NAME\" | gzip > /tmp/runbook.sql.gz", user="deploy")
    before = site.snapshot()
    local = tmp_path / "runbook.sql.gz"
    local.write_bytes(subprocess.run(["ssh", "-F", str(site.client.path / "ssh_config"), "vps", "cat /tmp/runbook.sql.gz"],
                                     capture_output=True, check=True).stdout)
    site.psql("TRUNCATE shop_order CASCADE")
    out = site.fab("db.restore", "--file", str(local), "--i-know-this-will-overwrite").stdout
    assert "upload runbook.sql.gz" in out and "sha256 matches" in out
    assert site.snapshot() == before
    assert site.host.ssh(f"stat -c '%a %U' {BACKUPS}/runbook.sql.gz").stdout.split() == ["600", "deploy"]


def test_db_list_shows_the_safety_database_and_the_next_good_backup_drops_it(site):
    assert KEPT in site.databases()
    assert re.search(rf"safety database {KEPT}, [\d.]+ [KM]B: replaced by db.restore at \S+ \S+Z; the next good backup drops it",
                     site.fab("db.list").stdout)
    checked = site.fab("check", check=False).stdout
    assert re.search(rf"^  \w+\s+backup\s+acme_db_.*; safety database {KEPT}, [\d.]+ [KM]B: replaced by db.restore at .*; "
                     "the next good backup drops it$", checked, re.MULTILINE), checked
    # A dump of it (db.restore's safety backup) keeps it; the nightly backup of the live database drops it, once verified.
    site.host.ssh(f"{SCRIPT} backup --db {KEPT} --label pre-restore --keep 0", user="deploy")
    assert KEPT in site.databases()
    site.host.ssh("sudo -n /usr/bin/systemctl start sum-acme-backup.service", user="deploy")
    assert KEPT not in site.databases()
    assert f"SAFETY_DROPPED {KEPT}" in site.host.ssh("journalctl -u sum-acme-backup.service -o cat --no-pager").stdout
    assert "safety database" not in site.fab("db.list").stdout and "safety database" not in site.fab("check", check=False).stdout


def test_an_unhealthy_app_after_the_switch_gets_the_old_database_back(site):
    name = site.backups()[-1]
    site.psql("UPDATE shop_customer SET name = 'live before the failed restore'")
    before, colours = site.snapshot(), site.live_colours()
    # The app's cache is critical to /health/: with Redis held down (a failing condition, so the app's Wants= cannot
    # start it), every answer is 503 once the app starts on the restored database.
    held = "/run/systemd/system/sum-acme-redis.service.d"
    site.host.ssh(f"mkdir -p {held} && printf '[Unit]\\nConditionPathExists=/nonexistent\\n' > {held}/held-down.conf && "
                  "systemctl daemon-reload && systemctl stop sum-acme-redis.service")
    try:
        failed = site.fab("db.restore", "--file", name, "--i-know-this-will-overwrite", check=False,
                          env={"FABRIC_SUM_HEALTH_TIMEOUT": "5"})
    finally:
        site.host.ssh(f"rm -r {held} && systemctl daemon-reload && systemctl start sum-acme-redis.service")
    assert failed.returncode != 0, failed.stdout
    assert "the app was not healthy on the restored database" in failed.stderr and "the old database is back" in failed.stderr
    assert "put the old acme back" in failed.stderr and "safety backup" not in failed.stdout
    assert site.snapshot() == before
    assert not {KEPT, COPY} & site.databases()
    deadline = time.monotonic() + 30
    while not site.healthy():
        assert time.monotonic() < deadline, "the app did not come back once Redis was back"
        time.sleep(0.5)
    assert site.live_colours() == colours


def test_an_autovacuum_worker_in_the_restored_copy_does_not_keep_it(site):
    # A freshly loaded copy draws autovacuum. The site's role may not end that worker (it is nobody's session), so a
    # drop that asks PostgreSQL to end every session failed and left the copy behind; PostgreSQL ends the worker itself
    # when the drop does not ask.
    postgres = "runuser -u postgres -- psql -X -q -At -v ON_ERROR_STOP=1"
    site.host.ssh("sudo -n /usr/bin/systemctl start sum-acme-restoredb-create.service", user="deploy")
    site.psql("CREATE TABLE churn (id int, pad text) WITH (autovacuum_vacuum_cost_delay = 100, autovacuum_vacuum_cost_limit = 1, "
              "autovacuum_vacuum_threshold = 0, autovacuum_vacuum_scale_factor = 0);"
              "INSERT INTO churn SELECT g, repeat('x', 200) FROM generate_series(1, 200000) g; DELETE FROM churn;", COPY)
    site.host.ssh(f"{postgres} -c 'ALTER SYSTEM SET autovacuum_naptime = 1' -c 'SELECT pg_reload_conf()'")
    try:
        worker = f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{COPY}' AND backend_type = 'autovacuum worker'"
        deadline = time.monotonic() + 90
        while site.host.ssh(f"{postgres} -c {shlex.quote(worker)}").stdout.strip() == "0":
            assert time.monotonic() < deadline, "no autovacuum worker came to the restored copy"
            time.sleep(0.2)
        site.host.ssh(f"{SCRIPT} discard", user="deploy")
    finally:
        site.host.ssh(f"{postgres} -c 'ALTER SYSTEM RESET autovacuum_naptime' -c 'SELECT pg_reload_conf()'")
    assert COPY not in site.databases()


def test_refusals(site):
    missing = site.fab("db.restore", "--file", "x.sql.gz", check=False)
    assert missing.returncode == 2 and "add --i-know-this-will-overwrite" in missing.stderr and "[" not in missing.stdout
    local = site.fab("-H", "localhost", "db.restore", "--file", "x.sql.gz", "--i-know-this-will-overwrite", check=False)
    assert local.returncode == 2 and "refusing a destructive task against this machine" in local.stderr
    # A second task while the site lock is held (as a release holds it) is refused, naming the holder.
    holder = subprocess.Popen(
        ["ssh", "-F", str(site.client.path / "ssh_config"), "deploy@vps", HOLD_LOCK],
        stdout=subprocess.PIPE, text=True)
    pid = ""
    try:
        held, pid = holder.stdout.readline().split()
        assert held == "HELD" and pid.isdigit()
        before = site.snapshot()
        locked = site.fab("db.restore", "--file", site.backups()[-1], "--i-know-this-will-overwrite", check=False)
        assert locked.returncode == 3 and "is locked: release by tester@ci" in locked.stderr
        assert site.snapshot() == before
    finally:
        holder.kill()
        site.host.ssh(f"kill {pid}; rm -f /srv/sum/acme/.lock.info" if pid else "true", check=False)


def test_retention_and_list(site):
    site.fab("db.backup", "--keep", "2", "--format", "zstd")
    kept = site.backups()
    assert len(kept) == 2 and kept[-1].endswith(".sql.zst")
    out = site.fab("db.list").stdout
    for name in kept:
        assert re.search(rf"{re.escape(name)}\s+[\d.]+ [KM]B\s+\d+[smhd].* ago\s+verified", out), out
    assert "nightly (enabled)" in out
    rehashed = site.fab("db.list", "--verify").stdout
    assert rehashed.count("verified, checksum re-read and matches") >= 2


def test_nightly_timer_takes_a_verified_backup(site):
    assert site.host.ssh("systemctl is-enabled sum-acme-backup.timer && systemctl is-active sum-acme-backup.timer").returncode == 0
    before = set(site.backups())
    site.host.ssh("sudo -n /usr/bin/systemctl start sum-acme-backup.service", user="deploy")
    new = set(site.backups()) - before
    assert len(new) == 1
    name = new.pop()
    assert name.endswith(".sql.gz") and site.host.ssh(f"cd {BACKUPS} && sha256sum -c {name}.sha256").returncode == 0
    assert len(site.backups()) <= 14
    assert re.search(r"nightly \(enabled\): last run .+: succeeded; next ", site.fab("db.list").stdout)


def test_rehearse_good_and_broken(site):
    live = site.snapshot()
    good = site.fab("db.rehearse").stdout
    assert re.search(r"rehearsal of acme_db_\S+ passed", good)
    assert "the same tables and row counts as the live database" in good and "no unapplied migrations" in good
    # Each part shows the time it took on the host, and together they fit in the one remote run that did them all.
    took = {name: float(s) for name, s in re.findall(r"^  ok\s+(.+?) \((\d+\.\d+)s\)", good, re.MULTILINE)}
    whole = next(v for k, v in took.items() if k.startswith("rehearse acme_db_"))
    parts = [took[k] for k in ("verify", "create scratch database rehearse-acme", "restore into the scratch database",
                               "tables and row counts", "migrate --check", "drop scratch database rehearse-acme")]
    assert took["restore into the scratch database"] >= 0.05 and took["migrate --check"] >= 0.2, good
    assert sum(parts) <= whole + 0.2, good
    broken = site.fab("db.rehearse", "--file", "sqlerror.sql.gz", check=False)
    assert broken.returncode != 0 and "failed and was rolled back" in broken.stderr
    assert "drop scratch database" in broken.stdout
    garbage = site.fab("db.rehearse", "--file", "garbage.sql.gz", check=False)
    assert garbage.returncode != 0 and "corrupt or truncated" in garbage.stderr
    databases = site.host.ssh("runuser -u postgres -- psql -XAtc 'SELECT datname FROM pg_database'").stdout.split()
    assert "rehearse-acme" not in databases
    assert site.snapshot() == live and site.healthy()


def test_password_never_in_argv_or_output(site):
    password = site.host.ssh("cat /root/pw").stdout.strip()
    assert len(password) >= 32
    site.host.ssh("kill $(cat /root/sampler.pid)", check=False)
    seen = set(site.host.ssh("cat /root/seen.log").stdout.splitlines())
    assert seen == {"pg_dump --format=plain", "psql -X -q -v ON_ERROR_STOP=1"}, "the sampler missed the db tools"
    assert site.host.ssh("cat /root/leak.log", check=False).stdout == ""
    assert all(password not in out for out in site.outputs)
    assert site.host.ssh("journalctl --no-pager | grep -cF -f /root/pw", check=False).stdout.strip() == "0"
