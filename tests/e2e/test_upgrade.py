"""A host provisioned and released by the version before sites had their own users and Redis is converted by one
`fab provision` per site, with no request dropped on either site, its warm standby kept, and its media still served."""

import re
import shutil
import subprocess

import pytest
from e2e_support import site_config
from site_repo import build_site_repo

from sum_tasks.testing.client import LIBRARY_ROOT, make_client
from sum_tasks.testing.load import Load

pytestmark = pytest.mark.e2e

# The last commit whose sites ran as the deploy user on the host-wide Redis.
BEFORE_ISOLATION = "22c3092"
DOMAINS = {"acme": "acme.test", "beta": "beta.test"}


def vendor_old_library(client_dir):
    archive = subprocess.run(["git", "-C", str(LIBRARY_ROOT), "archive", BEFORE_ISOLATION, "sum_tasks"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(client_dir)], input=archive, check=True)


def processes(host, slug):
    return host.ssh(f"ps -o user= -p $(pgrep -d, -f '^/srv/sum/{slug}/')").stdout.split()


def test_one_provision_per_site_converts_a_host_with_no_request_dropped(host_factory, tmp_path):
    host = host_factory(suite="bookworm")
    clients = {}
    for slug, domain in DOMAINS.items():
        build_site_repo(tmp_path / slug)
        vendor_old_library(tmp_path / slug)
        clients[slug] = make_client(tmp_path / slug, site_config(host, site_slug=slug, domains=[domain]),
                                    {"vps": (host, "root")})
        clients[slug].fab("provision")
        clients[slug].fab("-H", "deploy@vps", "release", "--ref", "v1")
        clients[slug].fab("-H", "deploy@vps", "release", "--ref", "v1.2")
        host.ssh(f"runuser -u deploy -g www-data -- sh -c 'umask 027; printf {slug}-photo > /srv/sum/{slug}/media/photo.txt'")
        assert set(processes(host, slug)) == {"deploy"}
        assert host.ssh(f"curl -sk --resolve {domain}:443:127.0.0.1 https://{domain}/media/photo.txt").stdout == f"{slug}-photo"
    assert "REDIS_URL=redis://localhost:6379/" in host.ssh("cat /srv/sum/acme/.env").stdout

    loads = [Load(host.ip, domain, path=path, rate=15, workers=3) for domain in DOMAINS.values() for path in ("/", "/media/photo.txt")]
    for load in loads:
        load.__enter__()
    try:
        for slug, client in clients.items():
            shutil.rmtree(client.path / "sum_tasks")  # the client now uses this version
            out = client.fab("provision").stdout
            assert re.search(rf"changed\s+app user sum-{slug}", out) and re.search(r"changed\s+restart the app \(a free colour", out), out
            assert re.search(r"changed\s+restart the warm standby \w+ as sum-", out), out
            shared = "host-wide redis bound to loopback (another site still uses it)" if slug == "acme" else "host-wide redis stopped"
            assert shared in out, out
    finally:
        for load in loads:
            load.__exit__(None, None, None)
    for load in loads:
        assert load.total > 100 and load.failed == 0, (load.host, load.path, load.summary())

    for slug, client in clients.items():
        assert set(processes(host, slug)) == {f"sum-{slug}"}, processes(host, slug)
        assert host.ssh(f"stat -c '%U %G' /srv/sum/{slug}/media/photo.txt").stdout.split() == [f"sum-{slug}", "caddy"]
        assert f"REDIS_URL='unix:///run/sum-{slug}-redis/redis.sock?db=0'" in host.ssh(f"cat /srv/sum/{slug}/.env").stdout
        assert re.search(r"provision: 0 changed", client.fab("provision").stdout)
        # The standby was restarted as the app's user, still warm: rollback takes it over.
        back = client.fab("-H", "deploy@vps", "rollback").stdout
        assert "warm standby" in back, back
    assert host.ssh("systemctl is-active redis-server", check=False).stdout.strip() == "inactive"
    assert host.ssh("ss -Hltn 'sport = :6379'").stdout.strip() == ""
