"""Which hosts and users a task acts on: decided from the config before anything connects."""

import shlex
import subprocess

import pytest
from fabric import Config, Connection
from invoke import Context
from invoke.exceptions import Exit

from sum_tasks.host.targets import targets

SITE = {"site_slug": "acme", "domains": ["acme.example"], "project_module": "acme"}


def config(**changes):
    return Config(overrides={"sum": {**SITE, **changes}})


@pytest.mark.parametrize("hosts", [["root@vps.invalid"], ["deploy@a.invalid", "root@b.invalid"]])
def test_deploy_tasks_refuse_root_before_connecting(hosts):
    with pytest.raises(Exit) as err:
        list(targets(Context(config(hosts=hosts))))
    assert err.value.code == 2 and "refusing to run as root on root@" in str(err.value.message)
    with pytest.raises(Exit, match="refusing to run as root"):
        list(targets(Connection("root@vps.invalid", config=config())))


def test_provision_and_check_may_run_as_root_and_deploy_tasks_as_the_deploy_user():
    assert [c.user for c, _ in targets(Context(config(hosts=["vps.invalid"])), role="admin")] == ["root"]
    assert [c.user for c, _ in targets(Context(config(hosts=["vps.invalid"])))] == ["deploy"]
    assert [c.user for c, _ in targets(Connection("root@vps.invalid", config=config()), role="admin")] == ["root"]


def test_agent_forwarding_comes_from_fabric_yaml_only():
    conn, _ = next(targets(Context(config(hosts=["vps.invalid"]))))
    assert conn.forward_agent is False
    conn, _ = next(targets(Context(Config(overrides={"sum": {**SITE, "hosts": ["vps.invalid"]}, "forward_agent": True}))))
    assert conn.forward_agent is True


def test_manage_takes_the_words_after_double_dash_from_fabric(monkeypatch):
    from types import SimpleNamespace

    import fabric.main

    from sum_tasks.cli import manage
    from sum_tasks.commands.manage import manage_script
    from sum_tasks.configuration import load_site

    monkeypatch.setattr(fabric.main.program, "core", SimpleNamespace(remainder="shell -c print(1)"), raising=False)
    manage.claim_arguments(["fab", "-H", "deploy@vps", "manage", "--", "shell", "-c", "print('a b')"])
    # Fabric no longer runs them as a shell command on the hosts; manage has them exactly as the shell split them.
    assert fabric.main.program.core.remainder == "" and manage._claimed == ["shell", "-c", "print('a b')"]
    site = load_site({"site_slug": "acme", "domains": ["acme.example"], "project_module": "acme"})
    text = manage_script(site, manage._claimed).text
    assert text.endswith(" sudo -n /usr/local/bin/sum-acme-manage")
    # What the shell sets the variable to, split again by the manage script: the same words.
    value = subprocess.run(["sh", "-c", text.replace(" sudo -n ", " printenv SUM_MANAGE_ARGS # ")],
                           capture_output=True, text=True, check=True).stdout
    assert shlex.split(value) == manage._claimed
    # Another task's `--` is Fabric's to run.
    fabric.main.program.core.remainder = "uname -a"
    manage.claim_arguments(["fab", "-H", "vps", "--", "uname", "-a"])
    assert fabric.main.program.core.remainder == "uname -a"
