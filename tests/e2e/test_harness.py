"""The real-host harness itself: hosts boot, are reachable, isolated, and leave nothing behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sum_tasks.testing import HostBootError, TestHost, boot_host, ensure_tree
from sum_tasks.testing.hosts import NETNS_DIR, NFT_TABLE, PREFIX, cgroup_roots
from sum_tasks.testing.pytest_plugin import HostFactory

pytestmark = pytest.mark.e2e

PYTHON = {"bookworm": "3.11", "trixie": "3.13"}


@pytest.fixture(scope="module")
def pair(host_factory: HostFactory) -> Iterator[list[TestHost]]:
    """A bookworm and a trixie baked host, booted concurrently from two trees."""
    hosts = host_factory.many({"suite": "bookworm"}, {"suite": "trixie", "name": "web-trixie"})
    yield hosts
    for host in hosts:
        host.shutdown()


def alive(pid: int | str) -> bool:
    """Whether `pid` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def leftovers(host: TestHost, nspawn_pid: int) -> list[str]:
    """Everything of `host` still present on the runner."""
    found = []
    netns = subprocess.run(["ip", "netns", "list"], check=False, capture_output=True, text=True).stdout
    if host.netns in [line.split()[0] for line in netns.splitlines()]:
        found.append(f"netns {host.netns}")
    if subprocess.run(["ip", "link", "show", f"{host.netns}-h"], check=False, capture_output=True).returncode == 0:
        found.append(f"veth {host.netns}-h")
    found += [f"cgroup {p}" for root in cgroup_roots() if (p := root / "sum-tasks" / host.netns).exists()]
    if alive(nspawn_pid):
        found.append(f"nspawn {nspawn_pid}")
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if f"--machine={host.netns}\0".encode() in cmdline.read_bytes():
                found.append(f"process {cmdline.parent.name}")
    found += [f"mount {line}" for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if f"/{host.netns} " in line]
    if host.workdir.exists():
        found.append(f"workdir {host.workdir}")
    return found


def nat_table_present() -> bool:
    return subprocess.run(["nft", "list", "table", "ip", NFT_TABLE], check=False, capture_output=True).returncode == 0


def test_hosts_run_systemd_with_baked_services(pair: list[TestHost]) -> None:
    for host in pair:
        assert host.state in ("running", "degraded")
        assert host.ssh("ps -p 1 -o comm=").stdout.strip() == "systemd"
        states = host.ssh("systemctl is-active postgresql redis-server caddy ssh").stdout.split()
        assert states == ["active"] * 4, (host.suite, states)
        assert host.ssh("redis-cli ping").stdout.strip() == "PONG"
        assert host.ssh("sudo -u postgres psql -tAc 'select 1'").stdout.strip() == "1"


def test_suites_differ(pair: list[TestHost]) -> None:
    for host in pair:
        version = host.ssh("python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'").stdout
        assert version.strip() == PYTHON[host.suite]
        assert host.ssh(". /etc/os-release; echo $VERSION_CODENAME").stdout.strip() == host.suite


def test_each_host_has_its_own_identity(pair: list[TestHost]) -> None:
    bookworm, trixie = pair
    assert (bookworm.name, trixie.name) == (bookworm.netns, "web-trixie")
    assert bookworm.ip != trixie.ip
    for host in pair:
        assert host.ssh("hostname").stdout.strip() == host.name
        assert f"inet {host.ip}/24" in host.ssh("ip -4 -o addr show dev eth0").stdout
        assert host.ssh("getent hosts $(hostname)").stdout.split()[0] == "127.0.1.1"
        sudo = host.ssh("sudo -n true", check=True)
        assert "unable to resolve" not in sudo.stderr
    ids = {h.ssh("cat /etc/machine-id").stdout for h in pair}
    keys = {h.ssh("cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[1] for h in pair}
    assert len(ids) == len(keys) == 2
    caddy = bookworm.ssh(f"curl -sS -o /dev/null -w '%{{http_code}}' --max-time 10 http://{trixie.ip}/")
    assert caddy.stdout == "200"


def test_hosts_reach_package_registries(pair: list[TestHost]) -> None:
    for host in pair:
        head = host.ssh("curl -sSI --max-time 30 http://deb.debian.org/debian/").stdout
        assert head.split()[1] == "200"
        code = host.ssh("curl -sS -o /dev/null -w '%{http_code}' --max-time 30 https://pypi.org/simple/pip/")
        assert code.stdout == "200"
    assert "Reading package lists" in pair[0].ssh("apt-get update", timeout=300).stdout


def test_fabric_connection_and_ssh_config(pair: list[TestHost], tmp_path: Path) -> None:
    host = pair[0]
    with host.connection() as conn:
        assert conn.run("id -u", hide=True).stdout.strip() == "0"
        assert conn.sudo("whoami", hide=True).stdout.strip() == "root"
    config = tmp_path / "ssh_config"
    config.write_text(host.ssh_config("target", "root"))
    out = subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", "target", "hostname"],
                         capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == host.name


def test_tree_is_never_written(pair: list[TestHost]) -> None:
    host = pair[0]
    tree = ensure_tree(host.suite, host.baked)
    host.ssh("echo scratch >/root/harness-marker && rm -f /etc/motd")
    assert not (tree / "root/harness-marker").exists()
    assert (tree / "etc/motd").exists()


def test_shutdown_leaves_nothing_behind() -> None:
    host = boot_host("bookworm", baked=True)
    assert host.process is not None
    pid = host.process.pid
    assert nat_table_present()
    kinds = {item.split()[0] for item in leftovers(host, pid)}
    assert {"netns", "veth", "cgroup", "nspawn", "process", "mount", "workdir"} <= kinds
    started = time.monotonic()
    host.shutdown()
    assert time.monotonic() - started < 35
    host.shutdown()
    assert leftovers(host, pid) == []
    with pytest.raises(subprocess.TimeoutExpired):
        host.ssh("true", timeout=3)


def test_boot_timeout_reports_console_and_cleans_up() -> None:
    with pytest.raises(HostBootError, match="console log tail") as caught:
        boot_host("trixie", baked=False, name="never-ready", timeout=0.1)
    host = caught.value.host
    assert host is not None and host.process is not None
    assert leftovers(host, host.process.pid) == []


def test_abandoned_hosts_are_cleaned_up() -> None:
    """atexit shuts down hosts left up; hosts of a killed process are reaped by the next boot."""
    script = textwrap.dedent("""
        import sys
        from sum_tasks.testing import boot_host
        host = boot_host("bookworm", baked=False)
        print(host.netns, host.process.pid, flush=True)
        if sys.argv[1] == "hang":
            import time; time.sleep(600)
    """)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-c", script, "exit"], capture_output=True, text=True,
                          timeout=180, env=env, check=True)
    netns, pid = done.stdout.split()
    assert not (NETNS_DIR / netns).exists()
    assert not alive(pid)

    hung = subprocess.Popen([sys.executable, "-c", script, "hang"], stdout=subprocess.PIPE,
                            text=True, env=env)
    try:
        netns, pid = hung.stdout.readline().split()
    finally:
        hung.send_signal(signal.SIGKILL)
        hung.wait(30)
    assert (NETNS_DIR / netns).exists() and alive(pid)
    with boot_host("bookworm", baked=False) as fresh:
        assert fresh.ssh("true").returncode == 0
        assert not alive(pid)
    assert not (NETNS_DIR / netns).exists()


def test_nat_removed_with_last_host(pair: list[TestHost]) -> None:
    for host in pair:
        host.shutdown()
    ours = [h.netns for h in pair]
    others = [p.name for p in NETNS_DIR.glob(f"{PREFIX}*")] if NETNS_DIR.exists() else []
    assert not set(ours) & set(others)
    assert nat_table_present() == bool(others)
    if not others:
        assert not any((root / "sum-tasks").exists() for root in cgroup_roots())
        assert not NETNS_DIR.exists()
