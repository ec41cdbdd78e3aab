"""A site with Celery (its app in a sub-package) and beat: both run as the app's user on the site's own Redis, and a
release restarts them without waiting for a running task."""

import re
import time

import pytest
from e2e_support import site_config
from site_repo import build_site_repo

from sum_tasks.testing.client import make_client

pytestmark = pytest.mark.e2e


def test_celery_and_beat_run_as_the_app_on_its_redis_and_never_hold_a_release(host_factory, tmp_path):
    host = host_factory(suite="bookworm")
    build_site_repo(tmp_path / "site")
    client = make_client(tmp_path / "site", site_config(host, celery=True, celery_app="examplesite.queue", celery_beat=True),
                         {"vps": (host, "root")})
    client.fab("provision")
    client.fab("release", "--ref", "celery")
    units = ("sum-acme-celery.service", "sum-acme-celerybeat.service")
    for unit in units:
        pid = host.ssh(f"systemctl show -p MainPID --value {unit}").stdout.strip()
        assert pid != "0" and host.ssh(f"stat -c %U /proc/{pid}").stdout.strip() == "sum-acme", unit
    # A task goes through the broker on the site's socket and its result comes back through the result backend.
    out = client.fab("manage", "--", "shell", "-c",
                     "from notes.tasks import add, whoami; print('sum', add.delay(2, 3).get(timeout=60)); print('who', whoami.delay().get(timeout=60))")
    assert re.search(r"^sum 5$", out.stdout, re.MULTILINE), out.stdout
    uid = host.ssh("id -u sum-acme").stdout.strip()
    live = host.ssh("readlink -f /srv/sum/acme/current").stdout.strip()
    assert f"who [{uid}, '{live}']" in out.stdout, out.stdout
    assert host.ssh("ls /var/lib/sum-acme-celerybeat").stdout.split() == ["schedule.db"]  # beat's shelve, where only the app writes

    # A task that runs for a minute does not hold the next release: the worker restarts in the background.
    client.fab("manage", "--", "shell", "-c", "from notes.tasks import nap; nap.delay(60)")
    time.sleep(3)
    started = time.monotonic()
    release = client.fab("release", "--ref", "celery")
    took = time.monotonic() - started
    switch = re.search(r"changed\s+switch \(([\d.]+)s\)", release.stdout)
    assert switch and float(switch.group(1)) < 3, release.stdout
    assert took < 50, (took, release.stdout)
    # The worker finishes the nap (warm shutdown), then runs the new release; beat too.
    deadline = time.monotonic() + 120
    new_live = host.ssh("readlink -f /srv/sum/acme/current").stdout.strip()
    while time.monotonic() < deadline:
        cwd = host.ssh("readlink /proc/$(systemctl show -p MainPID --value sum-acme-celery.service)/cwd", check=False).stdout.strip()
        if cwd == new_live:
            break
        time.sleep(2)
    assert cwd == new_live
    succeeded = host.ssh("journalctl -u sum-acme-celery.service -o cat --no-pager | grep -c 'Task notes.tasks.nap\\[.*\\] succeeded'",
                         check=False).stdout.strip()
    assert succeeded == "1", succeeded
    assert client.fab("check").returncode == 0
