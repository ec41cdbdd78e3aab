"""Many hosts are released one by one, stopping at the first failure (two sites on one host: test_isolation.py)."""

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

    # web2's /health/ now answers 503: its Redis is stopped, and a condition keeps the new colour (which wants it) from
    # starting it again. Its release must fail.
    hosts[1].ssh("mkdir -p /run/systemd/system/sum-acme-redis.service.d && "
                 "printf '[Unit]\\nConditionPathExists=/nonexistent\\n' > /run/systemd/system/sum-acme-redis.service.d/down.conf && "
                 "systemctl daemon-reload && systemctl stop sum-acme-redis.service")
    failed = client.fab("release", "--ref", "v1.2", check=False)
    assert failed.returncode != 0
    assert "FAILED on deploy@web2 at step 'start" in failed.stderr
    summary = failed.stdout[failed.stdout.index("release v1.2 on 3 hosts"):]
    assert re.search(r"deploy@web1: \S+ live \(v1.2\)", summary)
    assert "deploy@web2: FAILED, still on its previous release" in summary
    assert "deploy@web3: not started, still on its previous release" in summary
    assert [live_sha(host, "acme") for host in hosts] == [tags["v1.2"], tags["v1"], tags["v1"]]
    assert "[deploy@web3]" not in failed.stdout
