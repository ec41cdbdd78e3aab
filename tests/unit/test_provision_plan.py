"""The provision plan computed from config and facts, with no host involved."""

import re
import shutil
import subprocess

import pytest

from sum_tasks.commands.facts import Facts, OsRelease, loopback_only, parse_os_release, ufw_converged, ufw_others
from sum_tasks.configuration import ConfigError, load_site
from sum_tasks.operations.caddy import ADMIN_LINE, CADDY_IMPORT, main_caddyfile
from sum_tasks.operations.packages import caddy_from_official_repo, package_ops
from sum_tasks.operations.plan import host_plan
from sum_tasks.operations.postgresql import db_sql

FACTS = Facts(user="root", env_text="", caddyfile=":80 {\n\troot * /usr/share/caddy\n\tfile_server\n}\n", ssh_ports=(22,))


def by_name(ops):
    return {op.name: op for op in ops}


def test_os_release_and_caddy_source(site):
    bookworm = parse_os_release('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n')
    assert bookworm == OsRelease("debian", "12", "bookworm")
    jammy = OsRelease("ubuntu", "22.04", "jammy")
    assert not caddy_from_official_repo(site, bookworm)
    assert caddy_from_official_repo(site, jammy)
    assert not caddy_from_official_repo(site, OsRelease("ubuntu", "24.04", "noble"))
    assert [op.name for op in package_ops(site, jammy)] == ["caddy apt repository", "packages"]
    assert [op.name for op in package_ops(site, bookworm)] == ["packages"]


def test_sudoers_names_exact_units_and_no_wildcards(site):
    commands = site.paths.sudo_commands()
    assert "/usr/bin/systemctl restart sum-acme-kitchens-gunicorn@blue.service" in commands
    assert not any("*" in c or "caddy" in c or "daemon-reload" in c for c in commands)
    *units, manage = commands
    assert all(re.fullmatch(r"/(usr/)?bin/systemctl (start|stop|--no-block stop|restart|reset-failed) sum-acme-kitchens-[a-z@-]+\.service", c) for c in units)
    # The manage script, with no arguments at all (its arguments come in one environment variable sudo keeps).
    assert manage == '/usr/local/bin/sum-acme-kitchens-manage ""'
    sudoers = by_name(host_plan(site, FACTS))["sudoers rule"].stdin.decode()
    assert 'Defaults!/usr/local/bin/sum-acme-kitchens-manage env_keep += "SUM_MANAGE_ARGS"' in sudoers


def test_sudoers_file_passes_visudo(site, tmp_path):
    if not shutil.which("visudo"):
        pytest.fail("visudo is needed (apt-get install sudo)")
    op = by_name(host_plan(site, FACTS))["sudoers rule"]
    path = tmp_path / "sudoers"
    path.write_bytes(op.stdin)
    subprocess.run(["visudo", "-cqf", str(path)], check=True)
    assert "deploy ALL=(root) NOPASSWD: SUM_ACME_KITCHENS" in path.read_text()


def test_main_caddyfile_moves_the_admin_api_and_imports_the_sites_once():
    bare = main_caddyfile(":80 {\n\troot * /usr/share/caddy\n}\n")
    assert bare.startswith("{\n" + ADMIN_LINE + "}\n") and bare.index(CADDY_IMPORT) < bare.index(":80")
    with_global = "# operator's note\n{\n\temail a@b.example\n\tadmin localhost:2019\n}\n\n:80 {\n}\n"
    out = main_caddyfile(with_global)
    assert out.count("\tadmin ") == 1 and ADMIN_LINE in out and "email a@b.example" in out and out.startswith("# operator's note\n{")
    assert out.index(CADDY_IMPORT) > out.index("email") and out.index(CADDY_IMPORT) < out.index(":80")
    block = main_caddyfile("{\n\tadmin 0.0.0.0:2019 {\n\t\torigins x\n\t}\n\tdebug\n}\n")
    assert "0.0.0.0" not in block and "origins" not in block and "\tdebug\n" in block and ADMIN_LINE in block
    for text in (bare, out, block, main_caddyfile("")):
        assert main_caddyfile(text) == text


UFW_OK = """Status: active
Logging: on (low)
Default: deny (incoming), allow (outgoing), deny (routed)
New profiles: skip

To                         Action      From
--                         ------      ----
22/tcp                     ALLOW IN    Anywhere
80/tcp                     ALLOW IN    Anywhere
443/tcp                    ALLOW IN    Anywhere
22/tcp (v6)                ALLOW IN    Anywhere (v6)
80/tcp (v6)                ALLOW IN    Anywhere (v6)
443/tcp (v6)               ALLOW IN    Anywhere (v6)
"""


def test_ufw_status_judged_exactly():
    assert ufw_converged(UFW_OK, (22, 80, 443))
    assert not ufw_converged(UFW_OK.replace("active", "inactive"), (22, 80, 443))
    # An operator's own rule is theirs: still converged, and named.
    operator = UFW_OK + "6379/tcp                   ALLOW IN    10.0.0.5\n"
    assert ufw_converged(operator, (22, 80, 443)) and ufw_others(operator, (22, 80, 443)) == ["6379/tcp"]
    # A rule sum_tasks made for a port it no longer wants (sshd moved) is not.
    assert not ufw_converged(UFW_OK + "2222/tcp                   ALLOW IN    Anywhere                   # sum_tasks\n", (22, 80, 443))
    assert not ufw_converged(UFW_OK.replace("80/tcp ", "81/tcp "), (22, 80, 443))
    assert not ufw_converged(UFW_OK.replace("deny (incoming)", "allow (incoming)"), (22, 80, 443))
    assert not ufw_converged(UFW_OK, (2222, 80, 443))


def test_redis_listening_addresses():
    assert loopback_only("LISTEN 0 511 127.0.0.1:6379 0.0.0.0:*\nLISTEN 0 511 [::1]:6379 [::]:*\n")
    assert not loopback_only("LISTEN 0 511 0.0.0.0:6379 0.0.0.0:*\n")
    assert not loopback_only("LISTEN 0 511 *:6379 *:*\n")
    assert not loopback_only("")


def test_db_sql_has_no_clear_password_and_owner(site):
    sql = db_sql(site, "s3cretPassw0rdXYZ")
    assert "s3cretPassw0rdXYZ" not in sql and "SCRAM-SHA-256$4096:" in sql
    assert 'OWNER TO "acme_kitchens"' in sql and "ON_ERROR_STOP" in sql


def test_plan_has_every_step_in_order(site):
    names = [op.name for op in host_plan(site, FACTS)]
    expected = ["services enabled and running", "deploy user deploy", "deploy not in sudo group", "deploy in caddy group", "sudoers rule",
                "app user sum-acme-kitchens", "firewall (ufw)", "site directories", "media owned by the app, readable by caddy",
                "media mount unit", "media mounted without symlinks, for caddy too", ".env", "redis unit", "redis config", "redis enabled and running",
                "redis answers the app only", "postgresql role and database", "gunicorn unit", "socket directory", "no celery unit",
                "units enabled", "live.sock names the live colour", "caddy sites-enabled",
                "caddy main config (admin socket, sites-enabled)", "caddy site"]
    assert [n for n in names if n in expected] == expected


def test_optional_steps_follow_config(site_config):
    site = load_site({**site_config, "celery": True, "ssh_hardening": True, "deploy_user_sudo": True,
                      "authorized_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm op@laptop"]})
    ops = by_name(host_plan(site, FACTS))
    assert {"celery unit", "ssh hardening", "ssh key present for root", "deploy authorized keys", "deploy in sudo group"} <= set(ops)
    assert b"PermitRootLogin prohibit-password" in ops["ssh hardening"].stdin
    assert "sshd -t" in ops["ssh hardening"].apply
    non_root = by_name(host_plan(site, Facts(user="admin")))
    assert b"PermitRootLogin no" in non_root["ssh hardening"].stdin


def test_env_op_is_private_and_db_password_only_on_stdin(site):
    ops = host_plan(site, FACTS, secret=lambda: "generatedSecretValue123")
    env = by_name(ops)[".env"]
    assert "600 deploy deploy" in env.check
    for op in ops:
        assert "generatedSecretValue123" not in op.check + op.apply
    assert b"generatedSecretValue123" in env.stdin


def test_plan_is_the_same_for_the_same_facts(site):
    env = by_name(host_plan(site, FACTS))[".env"].stdin.decode()
    facts = Facts(user="root", env_text=env, caddyfile=FACTS.caddyfile)
    again = by_name(host_plan(site, facts))[".env"].stdin.decode()
    assert again == env


def test_site_packages_are_validated_and_installed_idempotently(site_config):
    from sum_tasks.configuration import ConfigError

    site = load_site({**site_config, "apt_packages": ["libmagic1", "libvips42"]})
    (op,) = [op for op in package_ops(site, OsRelease("debian", "12", "bookworm")) if op.name.startswith("site packages")]
    assert op.name == "site packages (libmagic1, libvips42)" and "libmagic1 libvips42" in op.apply
    assert "dpkg-query" in op.check and "= 2 ]" in op.check
    assert [op.name for op in package_ops(load_site(site_config), OsRelease("debian", "12", "bookworm"))] == ["packages"]
    for bad in (["libmagic1; rm -rf /"], ["-oDebug"], ["Lib"], "a b"):
        with pytest.raises(ConfigError) as err:
            load_site({**site_config, "apt_packages": bad})
        assert str(err.value.message).startswith("sum.apt_packages: each must be a Debian package name")


def test_provision_refuses_accounts_and_roles_it_did_not_make(site_config):
    from sum_tasks.operations.plan import refusals
    from sum_tasks.operations.postgresql import role_mark
    from sum_tasks.operations.users import ACCOUNT_MARK

    site = load_site(site_config)
    assert refusals(site, Facts(user="root")) == []
    ubuntu = refusals(site, Facts(user="root", deploy_account="Ubuntu", db_role=""))
    assert len(ubuntu) == 2 and "Unix account 'deploy' exists and was not made by sum_tasks" in ubuntu[0]
    assert "PostgreSQL role 'acme_kitchens' exists" in ubuntu[1] and "sum.adopt_existing" in ubuntu[1]
    # What sum_tasks made (marked, or named by its sudoers rule, or a site it provisioned before) is never refused.
    assert refusals(site, Facts(user="root", deploy_account=ACCOUNT_MARK, db_role=role_mark(site))) == []
    assert refusals(site, Facts(user="root", deploy_account="", deploy_granted=True, db_role="", env_text="A=1\n")) == []
    assert refusals(load_site({**site_config, "adopt_existing": True}), Facts(user="root", deploy_account="Ubuntu", db_role="")) == []
    assert f"COMMENT ON ROLE \"acme_kitchens\" IS '{role_mark(site)}'" in db_sql(site, "x" * 20)


def test_facts_say_who_made_the_account_and_the_role():
    from sum_tasks.commands.facts import parse_facts

    out = "@@ssh_ports\n22\n@@deploy_account\nexists:Ubuntu\n@@deploy_granted\n@@db_role\nexists:\n"
    facts = parse_facts("root", out)
    assert facts.deploy_account == "Ubuntu" and facts.deploy_granted is False and facts.db_role == ""
    none = parse_facts("root", "@@ssh_ports\n22\n@@deploy_account\n@@deploy_granted\n/etc/sudoers.d/sum-acme\n@@db_role\n")
    assert none.deploy_account is None and none.deploy_granted is True and none.db_role is None


def test_alert_urls_are_secrets_kept_in_files_only(site_config):
    hook, ping = "https://hooks.example/T000/B000/secretToken1", "https://ping.example/uuid-secret-2"
    site = load_site({**site_config, "alerts": {"webhook": hook, "success_url": ping}})
    ops = host_plan(site, FACTS)
    for op in ops:
        assert "secretToken1" not in op.check + op.apply and "uuid-secret-2" not in op.check + op.apply, op.name
    named = by_name(ops)
    assert named["alert webhook (sum.alerts.webhook)"].stdin == f'url = "{hook}"\n'.encode()
    assert "640 root deploy" in named["alert webhook (sum.alerts.webhook)"].check
    assert named["success ping (sum.alerts.success_url)"].stdin == f'url = "{ping}"\n'.encode()
    service = named["backup service"].stdin.decode()
    assert "OnFailure=sum-acme-kitchens-alert@%n.service" in service and "-K /etc/sum/sum-acme-kitchens-ping.curl" in service
    quiet = by_name(host_plan(load_site(site_config), FACTS))
    assert "OnFailure" not in quiet["backup service"].stdin.decode() and "rm -f" in quiet["no alert webhook"].apply
    assert "must be an http(s):// URL" in str(pytest.raises(ConfigError, load_site, {**site_config, "alerts": {"webhook": 'https://x/"a'}}).value)


def test_a_hand_made_site_is_refused_then_taken_over_in_two_provisions(site_config):
    from sum_tasks.commands.facts import parse_facts
    from sum_tasks.operations.plan import refusals

    hand = "@@ssh_ports\n22\n@@hand_caddy\nyes\n@@hand_units\nsum-acme-kitchens-gunicorn.service\n@@live\n"
    facts = parse_facts("root", hand)
    assert facts.hand_caddy and facts.hand_units == ("sum-acme-kitchens-gunicorn.service",) and not facts.live
    refused = refusals(load_site(site_config), facts)
    assert refused == [("site acme-kitchens was set up by hand (/etc/caddy/sites-enabled/sum-acme-kitchens.caddy, "
                       "/etc/systemd/system/sum-acme-kitchens-gunicorn.service): set sum.adopt_existing: true to take it over "
                       "(see the runbook's Taking over a site)")]
    site = load_site({**site_config, "adopt_existing": True, "db_name": "sum_site_db", "db_user": "sum_site_user"})
    assert refusals(site, facts) == []
    # Before any release of ours: the hand-made Caddy file and units keep serving; nothing of theirs is touched.
    first = by_name(host_plan(site, facts))
    assert first["caddy site"].check == "true" and "kept the hand-made" in first["caddy site"].describe("")
    assert first["hand-made units"].apply == "" and "hand-made units retired" not in first
    assert 'CREATE DATABASE "sum_site_db" OWNER "sum_site_user"' in first["postgresql role and database"].stdin.decode()
    # Once a release is live: Caddy moves to it, then the hand-made units go (in that order).
    live = parse_facts("root", hand.replace("@@live\n", "@@live\nyes\n"))
    second = host_plan(site, live)
    names = [op.name for op in second]
    assert names.index("caddy site") < names.index("hand-made units retired") == len(names) - 1
    retire = by_name(second)["hand-made units retired"]
    assert "systemctl disable --now sum-acme-kitchens-gunicorn.service" in retire.apply
    assert by_name(second)["caddy site"].stdin.startswith(b"# Managed by sum_tasks")
    assert retire.describe("/srv/sum/acme-kitchens/app\n") == (
        "left alone, no longer used by the site: /srv/sum/acme-kitchens/app (remove them by hand)")


def test_database_names_default_from_the_slug_and_are_checked(site_config):
    site = load_site(site_config)
    assert (site.db_name, site.db_user) == ("acme_kitchens", "acme_kitchens")
    assert load_site({**site_config, "db_name": "shop"}).db_user == "shop"
    for key, bad in (("db_name", "Shop"), ("db_user", "postgres"), ("db_name", "pg_x"), ("db_user", "a;b")):
        with pytest.raises(ConfigError) as err:
            load_site({**site_config, key: bad})
        assert str(err.value.message).startswith(f"sum.{key}: ")
