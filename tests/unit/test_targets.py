"""Which hosts and users a task acts on: decided from the config before anything connects."""

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
