"""The newcomer's one command: `python -m sum_tasks.testing.demo`, then `demo down` leaving nothing behind."""

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sum_tasks.testing.client import LIBRARY_ROOT
from sum_tasks.testing.demo import fetch_health
from sum_tasks.testing.hosts import NETNS_DIR, NFT_TABLE, PREFIX, STATE_DIR, cgroup_roots, kept_hosts, shutdown_kept

pytestmark = pytest.mark.e2e
NAME = "sum-demo-e2e"  # not the default name: a demo a developer left up is not touched


def demo(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    """Run the demo module as a newcomer would, from the checkout, echoing its output for the test log."""
    result = subprocess.run([sys.executable, "-m", "sum_tasks.testing.demo", *args], cwd=LIBRARY_ROOT, capture_output=True,
                            text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False,
                            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    sys.stdout.write(f"$ demo {' '.join(args)}\n{result.stdout}{result.stderr}(exit {result.returncode})\n")
    return result


def live_nspawn(netns: str) -> list[str]:
    """Non-zombie processes whose command line names the host's machine (a zombie holds nothing)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if f"--machine={netns}\0".encode() in (proc / "cmdline").read_bytes() and \
                    (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                found.append(proc.name)
    return found


def leftovers(netns: str, workdir: Path) -> list[str]:
    """Everything of the demo host and the demo's work dir still present on this machine."""
    found = [f"netns {netns}"] if (NETNS_DIR / netns).exists() else []
    if subprocess.run(["ip", "link", "show", f"{netns}-h"], check=False, capture_output=True).returncode == 0:
        found.append(f"veth {netns}-h")
    found += [f"cgroup {p}" for root in cgroup_roots() if (p := root / "sum-tasks" / netns).exists()]
    found += [f"process {pid}" for pid in live_nspawn(netns)]
    found += [f"mount {line}" for line in Path("/proc/self/mountinfo").read_text().splitlines() if f"/{netns} " in line]
    found += [f"state {p}" for p in (STATE_DIR / netns, workdir) if p.exists()]
    if not any(NETNS_DIR.glob(f"{PREFIX}*")) and \
            subprocess.run(["nft", "list", "table", "ip", NFT_TABLE], check=False, capture_output=True).returncode == 0:
        found.append(f"nft table {NFT_TABLE} with no host left")
    return found


def test_demo_runs_stays_up_and_down_removes_everything(tmp_path, host_factory):
    workdir = tmp_path / "demo"
    try:
        up = demo("--dir", str(workdir), "--name", NAME)
        assert up.returncode == 0, up.stderr[-3000:]
        state = json.loads((workdir / "demo.json").read_text())
        site = Path(state["site_dir"])
        v1 = subprocess.run(["git", "-C", str(site), "rev-parse", "v1^{commit}"], capture_output=True, text=True,
                            check=True).stdout.strip()

        # What the newcomer is shown: the real fab output, the health JSON of v1, the URL, the next steps.
        assert "$ cd " in up.stdout and "fab provision" in up.stdout and "fab -H deploy@vps release --ref v1" in up.stdout
        assert "[root@vps] provision:" in up.stdout and "[deploy@vps] release v1:" in up.stdout
        assert state["health"]["status"] == "ok" and state["health"]["version"]["git_sha"] == v1
        assert f'"git_sha": "{v1}"' in up.stdout
        assert f"curl -k --resolve acme.test:443:{state['ip']} https://acme.test/" in up.stdout
        assert f"cd {site}" in up.stdout and "release --ref v2" in up.stdout and "rollback" in up.stdout
        assert f"python3 -m sum_tasks.testing.demo down --dir {workdir} --name {NAME}" in up.stdout
        # The example client repo's own fabfile drove it: its Python hook ran after the switch.
        assert f"acme now serves {v1[:12]} (v1)" in up.stdout

        # The host outlives the demo process, and booting another host does not reap it as stale.
        other = host_factory(suite="bookworm")
        other.shutdown()
        assert [h.netns for h in kept_hosts(NAME)] == [state["netns"]]
        assert fetch_health(state["ip"])["version"]["git_sha"] == v1
        more = subprocess.run([sys.executable, "-m", "fabric", "releases"], cwd=site, capture_output=True, text=True,
                              timeout=120, check=False)
        assert more.returncode == 0 and v1[:12] in more.stdout, more.stderr

        down = demo("down", "--dir", str(workdir), "--name", NAME, timeout=120)
        assert down.returncode == 0 and f"removed host {NAME}" in down.stdout, down.stderr
        assert leftovers(state["netns"], workdir) == []
        assert kept_hosts(NAME) == []
        again = demo("down", "--dir", str(workdir), "--name", NAME, timeout=120)
        assert again.returncode == 0 and "no demo host" in again.stdout
    finally:
        shutdown_kept(NAME)
