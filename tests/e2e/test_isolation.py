"""Two client sites on one host, provisioned with the plain default config (one shared `deploy` login), and one of
them compromised: every attack runs with exactly the credentials of site A's running gunicorn (`as_app`)."""

import base64
import re
import shlex
from dataclasses import dataclass

import pytest
from e2e_support import as_app, site_config
from site_repo import build_site_repo

from sum_tasks.configuration import load_site
from sum_tasks.testing.client import Client, make_client

pytestmark = pytest.mark.e2e

DOMAINS = {"acme": "acme.test", "beta": "beta.test"}


@dataclass
class Pair:
    host: object
    acme: Client
    beta: Client
    tags: dict
    caddy_pid_before_beta: str
    caddy_pid_after_beta: str

    def app(self, slug: str, command: str):
        """`command` as site `slug`'s compromised app: its live gunicorn's uid, gid, groups and mount namespace."""
        colour = self.host.ssh(f"readlink /srv/sum/{slug}/live.sock").stdout.strip().rsplit("/", 1)[1].removesuffix(".sock")
        return as_app(self.host, f"sum-{slug}-gunicorn@{colour}.service", command)

    def get(self, slug: str, path: str) -> tuple[str, str]:
        """(status, body) of https://<slug's domain><path> through Caddy."""
        domain = DOMAINS[slug]
        out = self.host.ssh(f"curl -sk -w '\\n%{{http_code}}' --resolve {domain}:443:127.0.0.1 https://{domain}{path}", check=False).stdout
        body, _, status = out.rpartition("\n")
        return status, body

    def env(self, slug: str, key: str) -> str:
        return self.host.ssh(f"sed -n 's/^{key}=//p' /srv/sum/{slug}/.env").stdout.strip().strip("'")


def caddy_pid(host) -> str:
    return host.ssh("systemctl show -p MainPID --value caddy").stdout.strip()


@pytest.fixture(scope="module")
def pair(host_factory, tmp_path_factory):
    host = host_factory(suite="bookworm")
    root = tmp_path_factory.mktemp("isolation")
    tags = build_site_repo(root / "acme")
    build_site_repo(root / "beta")
    clients = {slug: make_client(root / slug, site_config(host, site_slug=slug, domains=[domain]), {"vps": (host, "root")})
               for slug, domain in DOMAINS.items()}
    clients["acme"].fab("provision")
    clients["acme"].fab("-H", "deploy@vps", "release", "--ref", "v1")
    before = caddy_pid(host)
    clients["beta"].fab("provision")
    clients["beta"].fab("-H", "deploy@vps", "release", "--ref", "v1.2")
    for client in clients.values():
        client.fab("-H", "deploy@vps", "db.backup")
    return Pair(host, clients["acme"], clients["beta"], tags, before, caddy_pid(host))


def test_both_sites_share_the_deploy_login_and_nothing_else(pair):
    host = pair.host
    assert pair.acme.path.joinpath("fabric.yaml").read_text().count("deploy_user") == 0
    for slug in DOMAINS:
        assert host.ssh(f"stat -c '%U' /srv/sum/{slug}/.env /srv/sum/{slug}/backups").stdout.split() == ["deploy", "deploy"]
        procs = host.ssh(f"ps -o user= -p $(systemctl show -p MainPID --value sum-{slug}-redis.service) "
                         f"-p $(pgrep -d, -f '^/srv/sum/{slug}/')").stdout.split()
        assert set(procs) == {f"sum-{slug}"}, procs
        assert host.ssh(f"id -nG sum-{slug}").stdout.split() == [f"sum-{slug}"]
        assert pair.get(slug, "/health/")[0] == "200"
    assert "DJANGO_DB_NAME=acme" in host.ssh("cat /srv/sum/acme/.env").stdout
    assert pair.env("acme", "REDIS_URL") == "unix:///run/sum-acme-redis/redis.sock?db=0"
    assert pair.env("beta", "REDIS_URL") == "unix:///run/sum-beta-redis/redis.sock?db=0"
    # Adding a site reloads Caddy, never restarts it; releasing or provisioning one site never restarts the other.
    assert pair.caddy_pid_before_beta == pair.caddy_pid_after_beta
    beta_pid = host.ssh("systemctl show -p MainPID --value sum-beta-gunicorn@blue.service").stdout.strip()
    pair.acme.fab("-H", "deploy@vps", "release", "--ref", "v1.2")
    again = pair.acme.fab("provision").stdout
    assert re.search(r"provision: 0 changed", again), again
    assert host.ssh("systemctl show -p MainPID --value sum-beta-gunicorn@blue.service").stdout.strip() == beta_pid
    assert caddy_pid(host) == pair.caddy_pid_after_beta


def test_1_the_app_reads_no_secret_backup_or_media_of_the_other_site(pair):
    pair.app("beta", "printf beta-private > /srv/sum/beta/media/private.txt")
    assert pair.get("beta", "/media/private.txt") == ("200", "beta-private")
    for attack in ("cat /srv/sum/beta/.env", "ls /srv/sum/beta/backups", "ls /srv/sum/beta", "ls /srv/sum/beta/releases",
                   "cat /srv/sum/beta/media/private.txt", "ls /srv/sum/beta/media", "cat /srv/sum/acme/.env",
                   "ls /srv/sum/acme/backups", "cat /proc/$(pgrep -f ^/srv/sum/beta/ | head -1)/environ"):
        out = pair.app("acme", attack)
        assert out.returncode != 0 and "beta_db_" not in out.stdout and "beta-private" not in out.stdout, (attack, out)
    # With its own database credentials, it cannot open the other site's database.
    password = shlex.quote(pair.env("acme", "DJANGO_DB_PASSWORD"))
    cross = pair.app("acme", f"PGPASSWORD={password} psql -h 127.0.0.1 -p 5432 -U acme -d beta -c 'select 1'")
    assert cross.returncode != 0 and "permission denied for database" in cross.stderr, cross
    # No file the app can read anywhere holds the other site's database password or secret key.
    for key in ("DJANGO_DB_PASSWORD", "DJANGO_SECRET_KEY"):
        secret = pair.env("beta", key)
        assert len(secret) >= 32
        found = pair.app("acme", f"grep -rlsF -- {shlex.quote(secret)} /srv /srv/sum/acme/releases /srv/sum/acme/media "
                         "/srv/sum/acme/static /run /var /etc /home /tmp /opt /root /usr/local; echo rc=$?")
        assert found.stdout.strip() in ("rc=1", "rc=2"), found.stdout  # 2: some files were unreadable; none matched


def test_2_the_app_cannot_connect_to_the_other_sites_sockets(pair):
    for colour in ("blue", "green"):
        out = pair.app("acme", f"curl -sS -m 5 --unix-socket /run/sum/beta/{colour}.sock http://beta.test/health/; echo rc=$?")
        assert "rc=7" in out.stdout and '"status"' not in out.stdout, out
    # Its own socket directory is its own; Caddy and the deploy login reach it through Caddy's group.
    assert pair.host.ssh("stat -c '%a %U %G' /run/sum/beta").stdout.split() == ["2750", "sum-beta", "caddy"]


def test_3_each_site_has_its_own_redis_that_only_its_app_opens(pair):
    own = pair.app("acme", "redis-cli -s /run/sum-acme-redis/redis.sock set k mine && redis-cli -s /run/sum-acme-redis/redis.sock get k")
    assert own.stdout.split() == ["OK", "mine"], own
    for attack in ("redis-cli -s /run/sum-beta-redis/redis.sock ping", "redis-cli -h 127.0.0.1 -p 6379 ping",
                   "redis-cli -s /run/sum-beta-redis/redis.sock -n 0 keys '*'"):
        out = pair.app("acme", attack + "; echo rc=$?")
        assert "PONG" not in out.stdout and ("denied" in out.stdout + out.stderr or "refused" in out.stdout + out.stderr), (attack, out)
    assert pair.host.ssh("ss -Hltn 'sport = :6379'").stdout.strip() == ""
    # The cache works (/health/ does a round trip) and check covers each site's Redis.
    for client in (pair.acme, pair.beta):
        out = client.fab("check").stdout
        assert re.search(r"ok\s+redis .*sum-\w+-redis.service active, on its own socket", out), out


def test_5_caddy_serves_no_link_planted_in_media_and_uploads_still_serve(pair):
    pair.host.ssh("echo root-only-canary > /root/canary && chmod 600 /root/canary")
    planted = pair.app("acme", "cd /srv/sum/acme/media && ln -s /etc/passwd passwd && ln -s /etc etc && "
                       "ln -s /srv/sum/beta/media/private.txt beta && ln -s /root/canary canary && "
                       "mkdir -p uploads && printf upload-ok > uploads/a.txt && ls -la")
    try:
        assert planted.returncode == 0, planted
        assert pair.get("acme", "/media/uploads/a.txt") == ("200", "upload-ok")
        for path in ("/media/passwd", "/media/etc/passwd", "/media/beta", "/media/canary", "/static/../media/passwd"):
            status, body = pair.get("acme", path)
            assert status != "200" and "root:" not in body and "beta-private" not in body and "canary" not in body, (path, status)
        # A hard link to a file the app does not own is refused too (the kernel's protected_hardlinks, and the bind mount).
        assert pair.app("acme", "ln /etc/caddy/Caddyfile /srv/sum/acme/media/caddyfile").returncode != 0
    finally:
        pair.app("acme", "cd /srv/sum/acme/media && rm -f passwd etc beta canary")


def test_6_the_app_reads_no_journal_and_the_operator_reads_each_sites_logs(pair):
    pair.get("beta", "/health/")
    out = pair.app("acme", "journalctl -q --no-pager -u sum-beta-gunicorn@blue.service -n 20; journalctl -q --no-pager -n 50")
    assert "beta" not in out.stdout and "gunicorn" not in out.stdout, out.stdout
    logs = pair.beta.fab("-H", "deploy@vps", "logs", "--lines", "50").stdout
    assert "sum-beta-gunicorn@" in logs and "GET /health/" in logs


def test_7_the_app_cannot_touch_its_own_backups(pair):
    # Every file, the site repository's too.
    listing = "cd /srv/sum/acme/backups && find . -type f -print0 | sort -z | xargs -0 sha256sum"
    before = pair.host.ssh(listing).stdout
    assert "acme_db_" in before and "./site.restic/config" in before
    name = next(n for n in before.split() if n.endswith(".sql.gz"))
    for attack in (f"rm -f /srv/sum/acme/backups/{name}", f": > /srv/sum/acme/backups/{name}",
                   f"mv /srv/sum/acme/backups/{name} /srv/sum/acme/media/x", "ls /srv/sum/acme/backups",
                   "touch /srv/sum/acme/backups/new", "rm -rf /srv/sum/acme/backups/site.restic",
                   "cat /srv/sum/acme/backups/.site.restic-password"):
        assert pair.app("acme", attack).returncode != 0, attack
    assert pair.host.ssh(listing).stdout == before
    assert pair.host.ssh("stat -c '%a %U' /srv/sum/acme/backups /etc/systemd/system/sum-acme-backup.service").stdout.split() == \
        ["700", "deploy", "644", "root"]
    assert "User=deploy" in pair.host.ssh("cat /etc/systemd/system/sum-acme-backup.service").stdout


SNAPSHOT = (
    "find /etc /root /usr/local /srv/sum/beta /home -xdev \\( -path /etc/ld.so.cache -o -path '/home/*/.cache' \\) -prune -o "
    "-printf '%p %u %g %m %s %l\\n' | sort; "
    "sha256sum /etc/shadow /etc/passwd /etc/group /etc/sudoers.d/* /root/canary /usr/local/bin/* /srv/sum/beta/.env"
)


def test_8_root_and_systemd_follow_no_link_the_app_planted(pair, tmp_path):
    host, paths = pair.host, load_site(site_config(pair.host, site_slug="acme", domains=["acme.test"])).paths
    host.ssh("echo root-only-canary > /root/canary && chmod 600 /root/canary")
    # The app cannot put anything at any path of the site's host map, nor beside them, except inside the two
    # directories it owns (media, with a site restore's staging area, and its socket directory), where root never follows a name.
    owned = (paths.media, paths.run_dir)
    names = [e.path for e in paths.entries() if not e.path.startswith(owned) and e.path != "/srv/sum"]
    names += [paths.release("20990101T000000Z-deadbeef"), paths.colour("amber").link, paths.colour("amber").env_stamp,
              paths.env + ".sum-new", paths.lock_info + ".tmp", f"{paths.backups}/acme_db_20990101T000000Z.sql.gz",
              f"{paths.backups}/.backup.lock", f"{paths.root}/.env.sum-upload"]
    for name in names:
        out = pair.app("acme", f"ln -s /root/canary {shlex.quote(name)}.planted && mv -T {shlex.quote(name)}.planted {shlex.quote(name)}")
        assert out.returncode != 0, (name, out)
    planted = pair.app("acme", f"cd {paths.media} && ln -s /root/canary canary && ln -s /etc etc && ln -s /etc/shadow uploads/shadow && "
                       "ln -s /root .sum-restore && "
                       f"cd {paths.run_dir} && ln -s /etc/shadow shadow.sock && ln -s /root/canary x.sock")
    assert planted.returncode == 0, planted
    # Root's one walk through media (provision gives foreign files to the app) must meet the links, and change only them.
    host.ssh(f"touch {paths.media}/uploads/made-by-root")
    before = host.ssh(SNAPSHOT).stdout

    acme = pair.acme
    assert re.search(r"changed\s+media owned by the app", acme.fab("provision").stdout)
    acme.fab("-H", "deploy@vps", "release", "--ref", "v1")
    acme.fab("-H", "deploy@vps", "rollback")
    acme.fab("-H", "deploy@vps", "env.set", "PLANTED=1", "--restart")
    acme.fab("-H", "deploy@vps", "db.backup")
    name = host.ssh(f"ls -1 {paths.backups} | grep -E '^acme_db_.*[.]sql[.]gz$' | tail -1").stdout.strip()
    local = tmp_path / name
    local.write_bytes(base64.b64decode(host.ssh(f"base64 -w0 {paths.backups}/{name}").stdout))
    acme.fab("-H", "deploy@vps", "db.restore", "--file", str(local), "--i-know-this-will-overwrite")
    # A site restore: the backup's media (the links as links) staged and switched in by the app, the staging area the
    # app had made a link to /root replaced, never followed.
    acme.fab("-H", "deploy@vps", "db.restore", "--file", name, "--with-media", "--i-know-this-will-overwrite")
    acme.fab("-H", "deploy@vps", "unlock")

    assert host.ssh(SNAPSHOT).stdout == before
    assert host.ssh(f"stat -c '%U %G' {paths.media}/uploads/made-by-root").stdout.split() == ["sum-acme", "caddy"]
    assert host.ssh(f"readlink {paths.media}/canary {paths.media}/etc {paths.run_dir}/x.sock").stdout.split() == \
        ["/root/canary", "/etc", "/root/canary"]
    # No root-only content reached anything the app reads.
    leaked = pair.app("acme", "grep -rlsF root-only-canary /srv/sum/acme/media /srv/sum/acme/releases /srv/sum/acme/static /run/sum/acme "
                      "/run/sum-acme-redis /var/lib/sum-acme-redis /tmp /var/tmp; echo rc=$?")
    assert leaked.stdout.strip() in ("rc=1", "rc=2"), leaked.stdout
    assert acme.fab("check").returncode == 0
