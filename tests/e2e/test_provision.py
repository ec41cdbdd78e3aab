"""provision on real booted Debian hosts, from a bare tree (a real apt-get install) to the golden path."""

import re

import pytest

pytestmark = pytest.mark.e2e

SAMPLER = ("nohup sh -c 'while :; do cat /proc/[0-9]*/cmdline 2>/dev/null | tr \"\\0\" \" \"; echo; sleep 0.02; done' "
           ">/root/argv.log 2>&1 & echo $! > /root/sampler.pid")


def steps(output):
    """(status, step name) of every step line in fab's output."""
    return re.findall(r"^  (ok|changed|would change|FAILED)\s+(.+?) \(\d+\.\d\ds\)", output, re.MULTILINE)


@pytest.mark.parametrize("suite", ["bookworm", "trixie"])
def test_provision_converges_a_bare_host(host_factory, client_for, suite):
    host = host_factory(suite=suite, baked=False)
    extra = {"bookworm": "libmagic1", "trixie": "libmagic1t64"}[suite]  # what python-magic needs, named as each release names it
    client = client_for(host, apt_packages=[extra])

    checked = client.fab("provision", "--check")
    assert "would change" in checked.stdout and "packages" in checked.stdout
    assert host.ssh("id deploy; test -e /srv/sum; dpkg -s caddy", check=False).returncode != 0, "--check changed the host"

    host.ssh(SAMPLER)
    first = client.fab("provision")
    host.ssh("kill $(cat /root/sampler.pid)")
    done = steps(first.stdout)
    assert ("changed", "packages") in done and ("changed", ".env") in done and ("changed", f"site packages ({extra})") in done
    host.ssh(f"dpkg -s {extra} | grep -qx 'Status: install ok installed'")
    assert not [s for s in done if s[0] == "FAILED"]
    assert re.search(r"\[root@vps\] provision: \d+ changed, \d+ steps in [\d.]+s", first.stdout)

    # Services; the site's own Redis answers its app's user on its socket, and no Redis listens on TCP.
    host.ssh("systemctl is-active postgresql caddy sum-acme-redis.service")
    assert host.ssh("systemctl is-active redis-server", check=False).stdout.strip() == "inactive"
    assert host.ssh("ss -Hltn 'sport = :6379'").stdout.strip() == ""
    assert host.ssh("runuser -u sum-acme -- redis-cli -s /run/sum-acme-redis/redis.sock ping").stdout.strip() == "PONG"
    ufw = host.ssh("ufw status").stdout
    rules = {line.split()[0] for line in ufw.splitlines() if "ALLOW" in line}
    assert "Status: active" in ufw and rules == {"22/tcp", "80/tcp", "443/tcp"}

    # .env, layout, sockets directory.
    assert host.ssh("stat -c '%a %U %G' /srv/sum/acme/.env").stdout.split() == ["600", "deploy", "deploy"]
    assert host.ssh("stat -c '%a %U %G' /srv/sum/acme/backups /run/sum/acme /srv/sum/acme/media").stdout.split() == \
        ["700", "deploy", "deploy", "2750", "sum-acme", "caddy", "2750", "sum-acme", "caddy"]
    assert host.ssh("id -nG sum-acme").stdout.split() == ["sum-acme"]
    assert "nosymfollow" in host.ssh("findmnt -n -o OPTIONS /srv/sum/acme/media").stdout
    env = host.ssh("cat /srv/sum/acme/.env").stdout
    assert "WAGTAILADMIN_BASE_URL=https://acme.test" in env and "ALLOWED_HOSTS=acme.test,www.acme.test" in env

    # The deploy user: key login, its own units and verbs only, not in the sudo group.
    assert host.ssh("id -un", user="deploy").stdout.strip() == "deploy"
    assert "sudo" not in host.ssh("id -nG deploy").stdout.split()
    host.ssh("sudo -n /usr/bin/systemctl restart sum-acme-gunicorn@blue.service", user="deploy")
    host.ssh("sudo -n systemctl stop sum-acme-gunicorn@green.service", user="deploy")
    for denied in ("sudo -n /usr/bin/systemctl stop caddy.service",
                   "sudo -n /usr/bin/systemctl restart sum-acme-gunicorn@blue.service caddy.service",
                   "sudo -n /usr/bin/systemctl daemon-reload", "sudo -n /bin/sh -c id"):
        assert host.ssh(denied, user="deploy", check=False).returncode != 0, denied
    # Nothing starts before a release exists.
    assert host.ssh("systemctl is-active sum-acme-gunicorn@blue.service", check=False).stdout.strip() == "inactive"
    assert host.ssh("systemctl is-enabled sum-acme-gunicorn@blue.service sum-acme-gunicorn@green.service").returncode == 0

    # The role owns its database and can create a table there.
    host.ssh("cd /srv/sum/acme && set -a && . ./.env && set +a && PGPASSWORD=$DJANGO_DB_PASSWORD "
             "psql -h 127.0.0.1 -p $DJANGO_DB_PORT -U $DJANGO_DB_USER -d $DJANGO_DB_NAME -v ON_ERROR_STOP=1 -c 'CREATE TABLE t (i int); DROP TABLE t'",
             user="deploy")
    assert host.ssh("runuser -u postgres -- psql -tAc \"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname='acme'\"").stdout.strip() == "acme"

    # Caddy: the config validates and the site is served (502 until a release exists).
    host.ssh("runuser -u caddy -- caddy validate --config /etc/caddy/Caddyfile --adapter caddyfile")
    code = host.ssh("curl -sk -o /dev/null -w '%{http_code}' --resolve acme.test:443:127.0.0.1 https://acme.test/health/", check=False).stdout
    assert code in ("502", "503")

    # The database password: in no argv sampled during the run, no log, no output.
    host.ssh("sed -n 's/^DJANGO_DB_PASSWORD=//p' /srv/sum/acme/.env > /root/pw && test -s /root/pw")
    password = host.ssh("cat /root/pw").stdout.strip()
    assert len(password) >= 32
    assert int(host.ssh("wc -l < /root/argv.log").stdout) > 50, "the argv sampler did not run"
    for place in ("/root/argv.log", "/var/log", "/tmp", "/etc"):
        found = host.ssh(f"grep -rlF -f /root/pw {place}", check=False).stdout.strip()
        assert found in ("", "/etc/ssh/sshd_config.d/never") , f"password found in {found}"
    assert host.ssh("journalctl --no-pager | grep -cF -f /root/pw", check=False).stdout.strip() == "0"
    assert password not in first.stdout + first.stderr

    # Idempotent: a second run changes nothing, and --check agrees. A firewall rule the operator added is left alone, and said so.
    host.ssh("ufw allow from 10.9.9.9 to any port 9100 proto tcp")
    second = client.fab("provision")
    assert re.search(r"ok\s+firewall \(ufw\) .*left alone, not made by sum_tasks: 9100/tcp", second.stdout), second.stdout
    assert "9100/tcp" in host.ssh("ufw status").stdout
    assert "[root@vps] provision: 0 changed" in second.stdout
    assert all(status == "ok" for status, _ in steps(second.stdout))
    again = client.fab("provision", "--check")
    assert "provision --check: 0 changed" in again.stdout and "would change" not in again.stdout
    assert host.ssh("cat /srv/sum/acme/.env").stdout == env


def test_a_remote_task_never_runs_here(tmp_path):
    from sum_tasks.testing.client import make_client

    client = make_client(tmp_path / "c", {"site_slug": "acme", "domains": ["acme.test"], "project_module": "x"}, {})
    result = client.fab("provision", check=False)
    assert result.returncode != 0
    assert "no target host" in result.stderr and "[" not in result.stdout
    for target in ("root@localhost", "127.0.0.1", "root@[::1]"):
        refused = client.fab("-H", target, "provision", check=False)
        assert refused.returncode != 0 and "refusing" in refused.stderr and "[" not in refused.stdout


def test_hardening_and_a_caddy_config_that_fails_validation(host_factory, client_for):
    host = host_factory(suite="bookworm")
    client = client_for(host, ssh_hardening=True)
    client.fab("provision")
    sshd = host.ssh("sshd -T").stdout
    assert "passwordauthentication no" in sshd and "kbdinteractiveauthentication no" in sshd
    # The operator connects as root: root keeps key logins, so nobody is locked out.
    assert "permitrootlogin without-password" in sshd
    assert host.ssh("id -un").stdout.strip() == "root"
    assert host.ssh("id -un", user="deploy").stdout.strip() == "deploy"

    # A client template override that Caddy rejects: the step fails, the old file stays, Caddy keeps serving.
    before = host.ssh("cat /etc/caddy/sites-enabled/sum-acme.caddy").stdout
    (client.path / "templates").mkdir()
    (client.path / "templates" / "site.caddy.j2").write_text("{{ site.primary_domain }} {\n\tnot_a_directive\n}\n")
    failed = client.fab("provision", check=False)
    assert failed.returncode != 0
    assert "FAILED on root@vps at step 'caddy site'" in failed.stderr and "not_a_directive" in failed.stderr
    assert host.ssh("cat /etc/caddy/sites-enabled/sum-acme.caddy").stdout == before
    assert host.ssh("ls /etc/caddy/sites-enabled").stdout.split() == ["sum-acme.caddy"]
    host.ssh("systemctl is-active caddy && runuser -u caddy -- caddy validate --config /etc/caddy/Caddyfile --adapter caddyfile")
    # An override that is valid is used.
    (client.path / "templates" / "site.caddy.j2").write_text(
        "# overridden by the client\n" + (client.path / "templates" / "site.caddy.j2").read_text().replace("\tnot_a_directive\n", "\trespond \"hi\"\n"))
    client.fab("provision")
    assert host.ssh("head -n 1 /etc/caddy/sites-enabled/sum-acme.caddy").stdout.strip() == "# overridden by the client"


def test_provision_refuses_an_account_and_a_role_it_did_not_make(host_factory, client_for):
    from e2e_support import site_config

    host = host_factory(suite="bookworm")
    host.ssh("useradd --create-home --shell /bin/bash --comment 'Debian cloud user' debian && "
             "runuser -u postgres -- psql -Xq -c 'CREATE ROLE acme LOGIN'")
    client = client_for(host, deploy_user="debian")
    refused = client.fab("provision", check=False)
    assert refused.returncode == 1 and "refusing to take over what sum_tasks did not make" in refused.stderr
    assert "Unix account 'debian' exists" in refused.stderr and "PostgreSQL role 'acme' exists" in refused.stderr
    assert host.ssh("test -e /srv/sum/acme || test -e /etc/sudoers.d/sum-acme", check=False).returncode != 0, "provision changed the site"
    assert host.ssh("getent passwd debian | cut -d: -f5").stdout.strip() == "Debian cloud user"

    # Said explicitly, it takes them over and marks them as its own: later runs need no flag and change nothing.
    client.configure(site_config(host, deploy_user="debian", adopt_existing=True))
    client.fab("provision")
    assert host.ssh("getent passwd debian | cut -d: -f5").stdout.strip() == "sum_tasks deploy user"
    comment = host.ssh("runuser -u postgres -- psql -XAtq -c \"SELECT shobj_description(oid, 'pg_authid') FROM pg_roles "
                       "WHERE rolname = 'acme'\"").stdout.strip()
    assert comment == "sum_tasks: site acme"
    client.configure(site_config(host, deploy_user="debian"))
    assert "provision: 0 changed" in client.fab("provision").stdout
