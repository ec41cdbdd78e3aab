"""SSH trust the OpenSSH way, against a real sshd: unknown hosts refused (or recorded with accept-new),
a changed host key always refused, the agent never forwarded unless fabric.yaml asks for it."""

import os
import signal
import subprocess

import pytest
import yaml

from sum_tasks.testing.client import make_client

pytestmark = pytest.mark.e2e

# A client task that shows what the remote side sees, through the library's own host selection and runner.
FABFILE = '''\
from invoke import task
from sum_tasks import Script, namespace, run, targets

ns = namespace()


@task
def probe(c):
    """Print the remote agent socket (empty when no agent is forwarded)."""
    for conn, _site in targets(c, role="admin"):
        print("agent=" + run(conn, Script("probe", 'echo "${SSH_AUTH_SOCK:-}"')).stdout.strip())


ns.add_task(probe)
'''
SITE = {"site_slug": "trust", "domains": ["trust.test"], "project_module": "x", "hosts": ["vps"]}


@pytest.fixture(scope="module")
def host(host_factory):
    return host_factory(suite="bookworm")


def client_with(tmp_path, host, strict, known_hosts, **config):
    client = make_client(tmp_path / "client", SITE, {"vps": (host, "root")}, fabfile=FABFILE)
    text = host.ssh_config("vps", "root", strict=strict).replace(str(host.known_hosts), str(known_hosts))
    (client.path / "ssh_config").write_text(text)
    if config:
        data = yaml.safe_load((client.path / "fabric.yaml").read_text())
        (client.path / "fabric.yaml").write_text(yaml.safe_dump({**data, **config}, sort_keys=False))
    return client


def test_an_unknown_host_is_refused_and_told_how_to_add_its_key(host, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("")
    for strict in ("yes", "ask"):
        result = client_with(tmp_path / strict, host, strict, known).fab("probe", check=False)
        assert result.returncode == 1 and "agent=" not in result.stdout
        assert f"refusing root@vps: the SSH host key of {host.ip} is not known" in result.stderr
        assert "ssh-keyscan" in result.stderr and "accept-new" in result.stderr
    assert known.read_text() == ""


def test_accept_new_records_the_key_and_a_changed_key_is_always_refused(host, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("# the operator's own file\n")
    client = client_with(tmp_path, host, "accept-new", known)
    assert "agent=" in client.fab("probe").stdout
    lines = known.read_text().splitlines()
    assert lines[0] == "# the operator's own file" and len(lines) == 2 and lines[1].startswith(f"{host.ip} ")
    assert lines[1].split()[1:] in [k.split()[1:] for k in host.known_hosts.read_text().splitlines()]
    assert "agent=" in client.fab("probe").stdout
    assert len(known.read_text().splitlines()) == 2

    # The host gets new keys (a rebuilt VPS, or a machine in the middle): refused whatever StrictHostKeyChecking says.
    host.ssh("rm -f /etc/ssh/ssh_host_*key* && ssh-keygen -A >/dev/null && systemctl restart ssh")
    for strict in ("accept-new", "no", "yes"):
        result = client_with(tmp_path / strict, host, strict, known).fab("probe", check=False)
        assert result.returncode == 1 and "agent=" not in result.stdout, result.stdout
        assert "its SSH host key has CHANGED" in result.stderr, result.stderr
    assert len(known.read_text().splitlines()) == 2
    host.record_host_keys()


def test_the_agent_is_forwarded_only_when_fabric_yaml_asks(host, tmp_path):
    agent = subprocess.run(["ssh-agent", "-s"], capture_output=True, text=True, check=True).stdout
    env = dict(line.split(";", 1)[0].split("=", 1) for line in agent.splitlines() if line.startswith("SSH_"))
    try:
        forwarding = host.ssh_config("vps", "root").replace("    IdentitiesOnly yes\n", "    IdentitiesOnly yes\n    ForwardAgent yes\n")
        refused = client_with(tmp_path / "a", host, "yes", host.known_hosts)
        (refused.path / "ssh_config").write_text(forwarding)
        assert refused.fab("probe", env=env).stdout.splitlines()[-1] == "agent="
        asked = client_with(tmp_path / "b", host, "yes", host.known_hosts, forward_agent=True)
        assert asked.fab("probe", env=env).stdout.splitlines()[-1].startswith("agent=/tmp/")
    finally:
        os.kill(int(env["SSH_AGENT_PID"]), signal.SIGTERM)
