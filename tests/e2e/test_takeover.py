"""A site set up by hand the runbook's way (its deploy user, ufw rules, role and database, directories, venv and checkout,
.env, gunicorn unit, Caddy file, sudoers line) is taken over by provision, release, provision: refused until the config
says so, then no failed request, and its data, media, secrets and the operator's firewall rule are kept."""

import json
import re
import subprocess

import pytest
from e2e_support import site_config
from site_repo import build_site_repo

from sum_tasks.commands import envfile
from sum_tasks.testing.client import make_client
from sum_tasks.testing.load import Load

pytestmark = pytest.mark.e2e

DB_PASSWORD = "Runbook-db-pass-0123456789abcdef"
SECRET_KEY = "runbook-secret-key-" + "x" * 40

# The runbook's sections 2-9 for SITE_SLUG=acme, as an operator types them (the gunicorn unit and the Caddy file are what
# the runbook's templates give once their placeholders are replaced; `tls internal` because the test network has no ACME).
RUNBOOK = r"""
set -eu
export SITE_SLUG=acme DEPLOY_USER=deploy
# 2) deploy user
adduser --disabled-password --gecos "" deploy
usermod -aG sudo deploy
install -d -m 0700 -o deploy -g deploy /home/deploy/.ssh
install -m 0600 -o deploy -g deploy /root/.ssh/authorized_keys /home/deploy/.ssh/authorized_keys
# 3) firewall, and a rule of the operator's own (a monitoring agent)
ufw allow OpenSSH >/dev/null; ufw allow 80/tcp >/dev/null; ufw allow 443/tcp >/dev/null
ufw allow from 10.213.0.0/16 to any port 9100 proto tcp >/dev/null
ufw --force enable >/dev/null
# 4) PostgreSQL
runuser -u postgres -- psql -q -c "CREATE USER sum_site_user WITH PASSWORD '@DB_PASSWORD@';" -c "CREATE DATABASE sum_site_db OWNER sum_site_user;"
# 5) directories, venv, checkout
install -d -m 0755 -o "$DEPLOY_USER" -g "$DEPLOY_USER" /srv/sum/${SITE_SLUG} /srv/sum/${SITE_SLUG}/backups \
  /srv/sum/${SITE_SLUG}/static /srv/sum/${SITE_SLUG}/media /var/log/sum/${SITE_SLUG}
sudo -u "$DEPLOY_USER" python3 -m venv /srv/sum/${SITE_SLUG}/venv
sudo -u "$DEPLOY_USER" git clone -q -b v1 /tmp/site.bundle /srv/sum/${SITE_SLUG}/app
# 6) .env
cat > /srv/sum/${SITE_SLUG}/.env <<EOF
DJANGO_SETTINGS_MODULE=examplesite.settings.production
DJANGO_SECRET_KEY=@SECRET_KEY@
ALLOWED_HOSTS=acme.test,www.acme.test
DJANGO_DB_NAME=sum_site_db
DJANGO_DB_USER=sum_site_user
DJANGO_DB_PASSWORD=@DB_PASSWORD@
DJANGO_DB_HOST=127.0.0.1
DJANGO_DB_PORT=5432
DJANGO_STATIC_ROOT=/srv/sum/${SITE_SLUG}/static
DJANGO_MEDIA_ROOT=/srv/sum/${SITE_SLUG}/media
SITE_DOMAIN=acme.test
REDIS_URL=redis://localhost:6379/0
CELERY_BROKER_URL=redis://localhost:6379/0
CELERY_RESULT_BACKEND=redis://localhost:6379/0
SENTRY_DSN=https://public@sentry.example/1
EOF
chown deploy:deploy /srv/sum/${SITE_SLUG}/.env; chmod 600 /srv/sum/${SITE_SLUG}/.env
# 9) what deploy.sh does: install, migrate, collect static
sudo -u deploy sh -c 'cd /srv/sum/acme/app && set -a && . ../.env && set +a && ../venv/bin/pip install -q -r requirements.txt \
  && ../venv/bin/python manage.py migrate --noinput >/dev/null && ../venv/bin/python manage.py collectstatic --noinput >/dev/null'
# 7) the gunicorn unit
cat > /etc/systemd/system/sum-${SITE_SLUG}-gunicorn.service <<EOF
[Unit]
Description=gunicorn for ${SITE_SLUG}
After=network.target postgresql.service

[Service]
User=deploy
Group=www-data
WorkingDirectory=/srv/sum/${SITE_SLUG}/app
EnvironmentFile=/srv/sum/${SITE_SLUG}/.env
RuntimeDirectory=sum-${SITE_SLUG}-gunicorn
UMask=0007
ExecStart=/srv/sum/${SITE_SLUG}/venv/bin/gunicorn --workers 2 --bind unix:/run/sum-${SITE_SLUG}-gunicorn/gunicorn.sock examplesite.wsgi:application
Restart=on-failure

[Install]
WantedBy=multi-user.target
EOF
systemctl daemon-reload
systemctl enable --now sum-${SITE_SLUG}-gunicorn.service
# 8) Caddy
install -d /etc/caddy/sites-enabled
sed -i '1i import /etc/caddy/sites-enabled/*.caddy\n' /etc/caddy/Caddyfile
cat > /etc/caddy/sites-enabled/sum-${SITE_SLUG}.caddy <<EOF
acme.test, www.acme.test {
	tls internal
	handle_path /static/* {
		root * /srv/sum/${SITE_SLUG}/static
		file_server
	}
	handle_path /media/* {
		root * /srv/sum/${SITE_SLUG}/media
		file_server
	}
	handle {
		reverse_proxy unix//run/sum-${SITE_SLUG}-gunicorn/gunicorn.sock
	}
}
EOF
usermod -aG www-data caddy
systemctl restart caddy
caddy validate --config /etc/caddy/Caddyfile >/dev/null 2>&1
# 9) the deploy user's sudoers line
echo 'deploy ALL=NOPASSWD: /bin/systemctl restart sum-*-gunicorn.service, /bin/systemctl start sum-*-gunicorn.service, /bin/systemctl stop sum-*-gunicorn.service' >> /etc/sudoers
visudo -c >/dev/null
""".replace("@DB_PASSWORD@", DB_PASSWORD).replace("@SECRET_KEY@", SECRET_KEY)

HAND_MADE = ("/etc/caddy/sites-enabled/sum-acme.caddy /etc/systemd/system/sum-acme-gunicorn.service /srv/sum/acme/.env "
             "/etc/caddy/Caddyfile")


def page(host, path: str) -> str:
    return host.ssh(f"curl -sk --resolve acme.test:443:127.0.0.1 https://acme.test{path}").stdout


def notes(host) -> str:
    sql = "SELECT string_agg(title, ',' ORDER BY id) FROM notes_note"
    return host.ssh(f"runuser -u postgres -- psql -XAtq -d sum_site_db -c \"{sql}\"").stdout.strip()


def test_a_runbook_site_is_taken_over_with_no_failed_request(host_factory, tmp_path):
    host = host_factory(suite="bookworm")
    shas = build_site_repo(tmp_path / "site")
    bundle = tmp_path / "site.bundle"
    subprocess.run(["git", "-C", str(tmp_path / "site"), "bundle", "create", "-q", str(bundle), "--all"], check=True)
    with host.connection() as conn:
        conn.put(str(bundle), "/tmp/site.bundle")
    host.ssh("chmod 644 /tmp/site.bundle")
    host.ssh(RUNBOOK, timeout=600)
    # The hand-made site serves, with a row and an upload of its own.
    host.ssh("runuser -u postgres -- psql -q -d sum_site_db -c \"INSERT INTO notes_note (title, body, created_at) "
             "VALUES ('written-by-hand', '', now())\"")
    host.ssh("runuser -u deploy -- sh -c 'printf hand-photo > /srv/sum/acme/media/photo.txt'")
    assert "written-by-hand" in page(host, "/") and page(host, "/media/photo.txt") == "hand-photo"
    before = host.ssh(f"sha256sum {HAND_MADE}").stdout

    client = make_client(tmp_path / "site", site_config(host), {"vps": (host, "root")})
    refused = client.fab("provision", check=False)
    assert refused.returncode != 0
    assert "site acme was set up by hand (/etc/caddy/sites-enabled/sum-acme.caddy, /etc/systemd/system/sum-acme-gunicorn.service)" \
        in refused.stderr + refused.stdout
    assert host.ssh(f"sha256sum {HAND_MADE}").stdout == before and "sudo" in host.ssh("id -nG deploy").stdout.split()

    client.configure(site_config(host, adopt_existing=True, db_name="sum_site_db", db_user="sum_site_user"))
    loads = [Load(host.ip, "acme.test", path=path, rate=10, workers=2) for path in ("/", "/health/", "/media/photo.txt")]
    for load in loads:
        load.__enter__()
    try:
        first = client.fab("provision").stdout
        assert "kept the hand-made /etc/caddy/sites-enabled/sum-acme.caddy serving until this site's first release" in first, first
        assert "kept sum-acme-gunicorn.service serving" in first and "host-wide redis bound to loopback" in first, first
        assert re.search(r"firewall \(ufw\).*left alone, not made by sum_tasks: .*9100", first), first
        assert "written-by-hand" in page(host, "/")  # still the hand-made gunicorn, through the hand-made Caddy file

        client.fab("-H", "deploy@vps", "release", "--ref", "v2")
        second = client.fab("provision").stdout
        assert re.search(r"changed\s+caddy site", second) and re.search(r"changed\s+hand-made units retired", second), second
        assert "left alone, no longer used by the site: /srv/sum/acme/app /srv/sum/acme/venv" in second, second
        assert "host-wide redis stopped" in second, second
    finally:
        for load in loads:
            load.__exit__(None, None, None)
    for load in loads:
        print(load.path, load.summary())
        assert load.total > 50 and load.failed == 0, (load.path, load.summary())

    # The site now runs from a release, as its own user, on its own Redis, with what the hand-made one had.
    health = json.loads(page(host, "/health/"))
    assert health["status"] == "ok" and health["version"]["git_sha"] == shas["v2"], health
    assert host.ssh("systemctl cat sum-acme-gunicorn.service", check=False).returncode != 0
    assert host.ssh("pgrep -u deploy -f gunicorn", check=False).returncode == 1
    assert "written-by-hand" in notes(host) and page(host, "/media/photo.txt") == "hand-photo"
    env = host.ssh("cat /srv/sum/acme/.env").stdout
    for kept in (f"DJANGO_SECRET_KEY={SECRET_KEY}", f"DJANGO_DB_PASSWORD={DB_PASSWORD}", "DJANGO_DB_NAME=sum_site_db",
                 "DJANGO_DB_USER=sum_site_user", "SENTRY_DSN=https://public@sentry.example/1"):
        assert kept in env.splitlines(), (kept, env)
    assert envfile.parse(env)["REDIS_URL"] == "unix:///run/sum-acme-redis/redis.sock?db=0", env
    assert "9100" in host.ssh("ufw status").stdout
    assert host.ssh("id -nG deploy").stdout.split().count("sudo") == 0
    # Data written by the new release lands in the same database; a backup and a third provision work as on any site.
    client.fab("-H", "deploy@vps", "db.backup")
    assert "provision: 0 changed" in client.fab("provision").stdout
