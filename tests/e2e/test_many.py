"""Many sites on one host stay isolated; many hosts are released one by one, stopping at the first failure."""

import re

import pytest
from e2e_support import site_config
from site_repo import build_site_repo

from sum_tasks.testing.client import make_client

pytestmark = pytest.mark.e2e


def live_sha(host, slug):
    return host.ssh(f"sed -n 's/^GIT_SHA=//p' /srv/sum/{slug}/current/.release.env").stdout.strip()


def main_pid(host, unit):
    return host.ssh(f"systemctl show -p MainPID --value {unit}").stdout.strip()


def test_two_sites_on_one_host_stay_isolated(host_factory, tmp_path):
    host = host_factory(suite="bookworm")
    tags = build_site_repo(tmp_path / "site")
    acme = make_client(tmp_path / "site", site_config(host), {"vps": (host, "root")})
    beta_config = site_config(host, site_slug="beta", domains=["beta.test"], deploy_user="beta")
    beta_dir = tmp_path / "beta"
    build_site_repo(beta_dir)
    beta = make_client(beta_dir, beta_config, {"vps": (host, "root")})
    acme.fab("provision")
    beta.fab("provision")
    acme.fab("release", "--ref", "v1")
    beta.fab("release", "--ref", "v1.2")
    assert live_sha(host, "acme") == tags["v1"] and live_sha(host, "beta") == tags["v1.2"]

    # Own database, role, Redis database, sockets, units, Caddy files, backups, .env.
    env = {slug: host.ssh(f"cat /srv/sum/{slug}/.env").stdout for slug in ("acme", "beta")}
    assert "DJANGO_DB_NAME=acme" in env["acme"] and "DJANGO_DB_NAME=beta" in env["beta"]
    assert "REDIS_URL=redis://localhost:6379/0" in env["acme"] and "REDIS_URL=redis://localhost:6379/1" in env["beta"]
    cross = host.ssh("cd /srv/sum/beta && set -a && . ./.env && set +a && PGPASSWORD=$DJANGO_DB_PASSWORD "
                     "psql -h 127.0.0.1 -p $DJANGO_DB_PORT -U beta -d acme -c 'select 1'", user="beta", check=False)
    assert cross.returncode != 0 and "permission denied for database" in cross.stderr
    assert host.ssh("cat /srv/sum/acme/.env", user="beta", check=False).returncode != 0
    assert host.ssh("ls /srv/sum/acme/backups", user="beta", check=False).returncode != 0
    assert host.ssh("sudo -n /usr/bin/systemctl restart sum-acme-gunicorn@blue.service", user="beta", check=False).returncode != 0
    assert sorted(host.ssh("ls /etc/caddy/sites-enabled").stdout.split()) == ["sum-acme.caddy", "sum-beta.caddy"]
    assert sorted(host.ssh("ls /run/sum").stdout.split()) == ["acme", "beta"]
    for slug, domain in (("acme", "acme.test"), ("beta", "beta.test")):
        body = host.ssh(f"curl -sk --resolve {domain}:443:127.0.0.1 https://{domain}/health/").stdout
        assert live_sha(host, slug) in body

    # Releasing or provisioning one never restarts the other.
    beta_unit = "sum-beta-gunicorn@blue.service"
    before = main_pid(host, beta_unit)
    acme.fab("release", "--ref", "v1.2")
    acme.fab("provision")
    assert main_pid(host, beta_unit) == before
    assert live_sha(host, "beta") == tags["v1.2"]


def test_hosts_are_released_one_by_one_stopping_at_the_first_failure(host_factory, tmp_path):
    hosts = host_factory.many({"suite": "bookworm"}, {"suite": "bookworm"}, {"suite": "bookworm"})
    aliases = {f"web{i + 1}": (host, "root") for i, host in enumerate(hosts)}
    tags = build_site_repo(tmp_path / "site")
    client = make_client(tmp_path / "site", site_config(hosts[0], hosts=list(aliases), health_timeout=5), aliases)
    provisioned = client.fab("provision")
    assert provisioned.stdout.count("provision: ") == 3
    first = client.fab("release", "--ref", "v1")
    assert "release v1 on 3 hosts, one by one:" in first.stdout
    assert all(live_sha(host, "acme") == tags["v1"] for host in hosts)

    hosts[1].ssh("systemctl stop redis-server")  # web2's /health/ now answers 503: its release must fail
    failed = client.fab("release", "--ref", "v1.2", check=False)
    assert failed.returncode != 0
    assert "FAILED on deploy@web2 at step 'start" in failed.stderr
    summary = failed.stdout[failed.stdout.index("release v1.2 on 3 hosts"):]
    assert re.search(r"deploy@web1: \S+ live \(v1.2\)", summary)
    assert "deploy@web2: FAILED, still on its previous release" in summary
    assert "deploy@web3: not started, still on its previous release" in summary
    assert [live_sha(host, "acme") for host in hosts] == [tags["v1.2"], tags["v1"], tags["v1"]]
    assert "[deploy@web3]" not in failed.stdout
