"""`sum.standby_minutes`: a small VPS stops the warm standby that long after a switch, and a rollback starts the
previous release cold, health-gated as ever."""

import re
import time

import pytest
from e2e_support import live_colour, site_config
from site_repo import HEADINGS, build_site_repo

from sum_tasks.testing.client import make_client

pytestmark = pytest.mark.e2e

PAGE = "curl -sk --resolve acme.test:443:127.0.0.1 https://acme.test/"


def active(host, colour: str) -> bool:
    return host.ssh(f"systemctl is-active -q sum-acme-gunicorn@{colour}.service", check=False).returncode == 0


def test_the_standby_stops_after_its_minutes_and_rollback_starts_it_cold(host_factory, tmp_path):
    host = host_factory(suite="bookworm")
    build_site_repo(tmp_path / "site")
    client = make_client(tmp_path / "site", site_config(host, standby_minutes=1), {"vps": (host, "root")})
    client.fab("provision")
    assert host.ssh("systemctl is-active sum-acme-standby.timer").stdout.strip() == "active"
    client.fab("-H", "deploy@vps", "release", "--ref", "v1")
    first = live_colour(host)
    client.fab("-H", "deploy@vps", "release", "--ref", "v1.2")
    live = live_colour(host)
    assert live != first and active(host, first), "the release before stays as the warm standby at first"

    # Past its minute, while a task holds the site lock (a release may be starting a colour), a run leaves every colour alone.
    holder = host.ssh("runuser -u deploy -- sh -c 'nohup flock /srv/sum/acme/.lock sleep 600 >/dev/null 2>&1 & echo $!'").stdout.strip()
    time.sleep(62)
    host.ssh("systemctl start sum-acme-standby.service")
    assert active(host, first), "the standby was stopped while the site lock was held"
    host.ssh(f"pkill -P {holder}; kill {holder}", check=False)

    # Once the lock is free, the timer's next run stops the standby, and only the standby.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and active(host, first):
        time.sleep(3)
    assert not active(host, first), "the standby still runs well past sum.standby_minutes"
    assert active(host, live) and HEADINGS["v1.2"] in host.ssh(PAGE).stdout
    log = host.ssh("journalctl -u sum-acme-standby.service -o cat --no-pager").stdout
    assert re.search(rf"stopping the standby {first}, \d+ minutes after the switch", log), log
    assert host.ssh("systemctl show -p Result --value sum-acme-standby.service").stdout.strip() == "success"

    # A rollback now has no warm standby: it starts the previous release on a free colour, gated on /health/.
    started = time.monotonic()
    out = client.fab("-H", "deploy@vps", "rollback").stdout
    took = time.monotonic() - started
    print(f"cold rollback took {took:.1f}s")
    assert "(warm standby)" not in out and re.search(rf"start (?!{first}\b)\w+ and wait for /health/", out), out
    assert HEADINGS["v1"] in host.ssh(PAGE).stdout
    assert client.fab("check").returncode == 0

    # Back to 0: the timer goes, and a second provision changes nothing.
    client.configure({**site_config(host), "standby_minutes": 0})
    client.fab("provision")
    assert host.ssh("ls /etc/systemd/system/sum-acme-standby.timer", check=False).returncode != 0
    assert "provision: 0 changed" in client.fab("provision").stdout
