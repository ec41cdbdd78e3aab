"""`sum.alerts`: a failed nightly backup POSTs JSON to the webhook, a good one pings the success URL; both reach a real
HTTP receiver on the test network (this machine's side of the host's link), and neither URL shows in any argv."""

import json
import time

import pytest
from e2e_support import receiving, site_config

from sum_tasks.testing.client import make_client

pytestmark = pytest.mark.e2e


def test_a_failed_backup_alerts_the_webhook_and_a_good_one_pings(host_factory, tmp_path):
    host = host_factory(suite="bookworm")
    with receiving(host) as (receiver, base):
        client = make_client(tmp_path / "client", site_config(host, alerts={
            "webhook": f"{base}/hooks/T0/secret-hook-token", "success_url": f"{base}/ping/secret-ping-uuid"}), {"vps": (host, "root")})
        client.fab("provision")
        assert host.ssh("stat -c '%a %U %G' /etc/sum/sum-acme-alert.curl /etc/sum/sum-acme-ping.curl").stdout.split() == \
            ["640", "root", "deploy"] * 2
        # Sample every process's argv while the jobs run: neither URL may show.
        host.ssh("nohup sh -c 'while :; do cat /proc/[0-9]*/cmdline 2>/dev/null | tr \"\\0\" \" \"; echo; sleep 0.02; done' "
                 ">/root/argv.log 2>&1 & echo $! > /root/sampler.pid")

        host.ssh("systemctl start sum-acme-backup.service")
        seen = receiver.wait(1)
        assert [(m, p) for m, p, _ in seen] == [("GET", "/ping/secret-ping-uuid")], seen

        # The backup fails (its database is gone for a moment): the webhook hears which unit failed, where.
        host.ssh("systemctl stop postgresql")
        assert host.ssh("systemctl start sum-acme-backup.service", check=False).returncode != 0
        host.ssh("systemctl start postgresql")
        seen = receiver.wait(2)
        assert len(seen) == 2 and seen[1][:2] == ("POST", "/hooks/T0/secret-hook-token"), seen
        alert = json.loads(seen[1][2])
        assert alert["event"] == "failure" and alert["site"] == "acme" and alert["unit"] == "sum-acme-backup.service", alert
        assert alert["text"] == alert["content"] and "sum-acme-backup.service failed on" in alert["text"], alert
        time.sleep(1)
        assert len(receiver.seen) == 2, "a failed backup must not ping the success URL"

        host.ssh("kill $(cat /root/sampler.pid)")
        argv = host.ssh("cat /root/argv.log").stdout
        assert argv.count("\n") > 100 and "secret-hook-token" not in argv and "secret-ping-uuid" not in argv
        logs = host.ssh("journalctl -o cat --no-pager").stdout
        assert "secret-hook-token" not in logs and "secret-ping-uuid" not in logs

        # Without alerts, provision removes them again.
        client.configure(site_config(host))
        client.fab("provision")
        assert host.ssh("ls /etc/sum/sum-acme-alert.curl /etc/sum/sum-acme-ping.curl", check=False).returncode != 0
        assert "OnFailure" not in host.ssh("cat /etc/systemd/system/sum-acme-backup.service").stdout
