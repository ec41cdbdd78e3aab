"""Boot and tear down Debian test hosts: systemd-nspawn --boot, each in its own netns."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fabric import Config, Connection

from .trees import ensure_key, ensure_tree, locked, remove_tree, say

if TYPE_CHECKING:
    from typing import Self

PREFIX = "sumt-"
SUBNET = "10.213"
NFT_TABLE = "sum_tasks"
STATE_DIR = Path("/run/sum-tasks")
NETNS_DIR = Path("/run/netns")
NSPAWN_RUN_DIR = Path("/run/systemd/nspawn")
CGROUP_GROUP = "sum-tasks"
BOOT_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
KEPT = "kept"  # the owner file of a host detached with boot_host(keep=True)
REQUIRED_TOOLS = ("systemd-nspawn", "debootstrap", "unshare", "ip", "nft", "ssh", "ssh-keygen")
NAT_RULES = f"""\
table ip {NFT_TABLE} {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr {SUBNET}.0.0/16 ip daddr != {SUBNET}.0.0/16 masquerade
    }}
}}
"""

_live: list[TestHost] = []
_live_lock = threading.Lock()


class HostBootError(RuntimeError):
    """A test host did not come up; `host` is the (already shut down) host, if one was made."""

    def __init__(self, message: str, host: TestHost | None = None) -> None:
        super().__init__(message)
        self.host = host


class HostCommandError(subprocess.CalledProcessError):
    """A command run over ssh on a test host failed."""

    def __str__(self) -> str:
        return (f"{super().__str__()}\n--- stdout ---\n{(self.stdout or '')[-3000:]}"
                f"\n--- stderr ---\n{(self.stderr or '')[-3000:]}")


def cgroup_roots() -> list[Path]:
    """The cgroup hierarchies each host gets its own directory in."""
    hybrid = [Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified")]
    return [p for p in hybrid if _is_mount(p)] or [Path("/sys/fs/cgroup")]


def _is_mount(path: Path) -> bool:
    """Whether `path` is a mount point, bind mounts of a directory onto itself included."""
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    return any(line.split()[4] == str(path) for line in mounts)


def boot_problem() -> str | None:
    """Why this machine cannot boot test hosts, or None if it can."""
    if os.geteuid() != 0:
        return "booting test hosts needs root (systemd-nspawn, netns, cgroups, nft)"
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if missing:
        return (f"missing tools for test hosts: {', '.join(missing)} "
                "(apt-get install systemd-container debootstrap nftables iproute2 openssh-client)")
    return None


@dataclass(eq=False)
class TestHost:
    """A booted Debian machine reachable over ssh at `ip`."""

    __test__ = False

    name: str
    ip: str
    suite: str
    key_path: Path
    baked: bool = True
    netns: str = ""
    workdir: Path = Path()
    state: str = ""
    kept: bool = False
    pid: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _down: bool = field(default=False, repr=False)

    @property
    def console_log(self) -> Path:
        """File receiving the host's console output."""
        return self.workdir / "console.log"

    def ssh(self, cmd: str, user: str = "root", check: bool = True, timeout: float = 300.0,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run `cmd` on the host with the system ssh client."""
        argv = ["ssh", "-F", "/dev/null", "-i", str(self.key_path), "-o", "IdentitiesOnly=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
                f"{user}@{self.ip}", cmd]
        result = subprocess.run(argv, check=False, input=input, capture_output=True, text=True, timeout=timeout,
                                stdin=None if input is not None else subprocess.DEVNULL)
        if check and result.returncode:
            raise HostCommandError(result.returncode, cmd, result.stdout, result.stderr)
        return result

    def connection(self, user: str = "root") -> Connection:
        """A Fabric connection to the host that never reads local stdin."""
        return Connection(
            self.ip, user=user, connect_timeout=10,
            config=Config(overrides={"run": {"in_stream": False}}),
            connect_kwargs={"key_filename": [str(self.key_path)], "look_for_keys": False,
                            "allow_agent": False},
        )

    @property
    def known_hosts(self) -> Path:
        """This host's SSH host keys as a known_hosts file (written once it is up)."""
        return self.workdir / "known_hosts"

    def record_host_keys(self) -> None:
        """Write the host's own public host keys to `known_hosts`, read on the host as a provider's console shows them."""
        keys = self.ssh("cat /etc/ssh/ssh_host_*_key.pub").stdout.splitlines()
        self.known_hosts.write_text("".join(f"{self.ip} {' '.join(k.split()[:2])}\n" for k in keys if k.strip()))

    def ssh_config(self, alias: str, user: str = "root", strict: str = "yes") -> str:
        """An OpenSSH client config block naming this host `alias`, its host keys checked against `known_hosts`."""
        return (f"Host {alias}\n    HostName {self.ip}\n    User {user}\n"
                f"    IdentityFile {self.key_path}\n    IdentitiesOnly yes\n"
                f"    StrictHostKeyChecking {strict}\n    UserKnownHostsFile {self.known_hosts}\n")

    def shutdown(self) -> None:
        """Power the host off and remove its netns, veth, cgroups and workdir; safe to call twice."""
        with self._lock:
            if self._down:
                return
            self._down = True
            started = time.monotonic()
            if self.process is not None:
                _stop(self.process)
            else:
                _stop_pid(self.pid)
            with locked(STATE_DIR / "hosts.lock", 120):
                _teardown(self.netns)
                _release_shared()
            with _live_lock:
                if self in _live:
                    _live.remove(self)
            say(f"{self.name} shut down in {time.monotonic() - started:.1f}s")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def _start(self, tree: Path) -> None:
        procs = [str(_cgroup(root, self.netns) / "cgroup.procs") for root in cgroup_roots()]
        for path in procs:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        argv = [
            "sh", "-c", 'for f in $SUMT_CGROUPS; do echo $$ >"$f" || exit 97; done; exec "$@"', "sh",
            "systemd-nspawn", "-D", str(tree), "--boot", "--volatile=overlay",
            "--register=no", "--keep-unit", f"--network-namespace-path={NETNS_DIR / self.netns}",
            "--capability=CAP_NET_ADMIN,CAP_NET_RAW", "--console=read-only",
            f"--machine={self.netns}", f"--hostname={self.name}",
        ]
        env = {**os.environ, "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network",
               "SUMT_CGROUPS": " ".join(procs)}
        with open(self.console_log, "wb") as log:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.pid = self.process.pid  # sh execs systemd-nspawn: the same process
        (self.workdir / "host.json").write_text(json.dumps(
            {"name": self.name, "ip": self.ip, "suite": self.suite, "baked": self.baked,
             "key_path": str(self.key_path), "netns": self.netns, "pid": self.pid}))

    def _detach(self) -> None:
        """Keep the host up after this process exits: no atexit shutdown, never reaped as stale."""
        owner = self.workdir / "owner"
        owner.with_suffix(".new").write_text(KEPT)
        owner.with_suffix(".new").replace(owner)
        self.kept = True
        with _live_lock:
            if self in _live:
                _live.remove(self)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise HostBootError(self._explain(f"systemd-nspawn exited with {self.process.returncode}"), self)
            try:
                result = self.ssh("systemctl is-system-running", check=False, timeout=15)
            except subprocess.TimeoutExpired:
                last = "ssh timed out"
                continue
            answer = result.stdout.strip()
            if answer in ("running", "degraded"):
                self.state = answer
                self.record_host_keys()
                return
            last = answer or (result.stderr.strip().splitlines() or ["?"])[-1]
            time.sleep(0.25)
        raise HostBootError(self._explain(f"not ready after {timeout:.1f}s (last: {last})"), self)

    def _explain(self, problem: str) -> str:
        try:
            tail = self.console_log.read_text(errors="replace").splitlines()[-40:]
        except OSError:
            tail = []
        return f"host {self.name} ({self.ip}, {self.netns}): {problem}; console log tail:\n" + "\n".join(tail)


def boot_host(suite: str = "bookworm", baked: bool = True, name: str | None = None,
              timeout: float = BOOT_TIMEOUT, keep: bool = False) -> TestHost:
    """Boot a fresh host from the cached `suite` tree and wait until systemd and sshd are up.

    With `keep`, the host outlives this process once it is up (no shutdown at exit, not reaped as
    stale); end it with `shutdown_kept(name)` from any process. A boot that fails is torn down either way.
    """
    problem = boot_problem()
    if problem:
        raise HostBootError(problem)
    tree = ensure_tree(suite, baked)
    key = ensure_key()
    started = time.monotonic()
    with locked(STATE_DIR / "hosts.lock", 120):
        _reap_stale()
        index = next((n for n in range(1, 255) if not (NETNS_DIR / f"{PREFIX}{n}").exists()), None)
        if index is None:
            raise HostBootError("all 254 test host slots are in use")
        netns = f"{PREFIX}{index}"
        workdir = STATE_DIR / netns
        remove_tree(workdir)
        workdir.mkdir(parents=True)
        (workdir / "owner").write_text(str(os.getpid()))
        _run("ip", "netns", "add", netns)
        host = TestHost(name=name or netns, ip=f"{SUBNET}.{index}.2", suite=suite, key_path=key,
                        baked=baked, netns=netns, workdir=workdir)
        with _live_lock:
            _live.append(host)
    try:
        _setup_network(netns, index)
        with locked(STATE_DIR / "hosts.lock", 120):
            _ensure_nat()
        host._start(tree)
        host._wait_ready(timeout)
        if keep:
            host._detach()
    except BaseException:
        host.shutdown()
        raise
    say(f"{host.name} ({suite}{'' if baked else ', base'}) at {host.ip} {host.state} "
        f"after {time.monotonic() - started:.1f}s")
    return host


def boot_hosts(*specs: Mapping[str, Any]) -> list[TestHost]:
    """Boot several hosts concurrently; each spec holds `boot_host` keyword arguments."""
    with ThreadPoolExecutor(max_workers=max(1, len(specs))) as pool:
        futures = [pool.submit(boot_host, **spec) for spec in specs]
    errors = [f.exception() for f in futures if f.exception()]
    hosts = [f.result() for f in futures if not f.exception()]
    if errors:
        for host in hosts:
            host.shutdown()
        raise errors[0]
    return hosts


def shutdown_all() -> None:
    """Shut down every host this process still has up (kept hosts excepted)."""
    with _live_lock:
        hosts = list(_live)
    for host in hosts:
        host.shutdown()


def kept_hosts(name: str | None = None) -> list[TestHost]:
    """The hosts booted with `keep=True` that are still up on this machine, optionally only those named `name`."""
    hosts = []
    for ns in sorted(NETNS_DIR.glob(f"{PREFIX}*")):
        workdir = STATE_DIR / ns.name
        try:
            if (workdir / "owner").read_text().strip() != KEPT:
                continue
            meta = json.loads((workdir / "host.json").read_text())
        except (OSError, ValueError):
            continue
        if name is None or meta["name"] == name:
            hosts.append(TestHost(name=meta["name"], ip=meta["ip"], suite=meta["suite"], key_path=Path(meta["key_path"]),
                                  baked=meta["baked"], netns=ns.name, workdir=workdir, state="kept", kept=True,
                                  pid=int(meta["pid"])))
    return hosts


def shutdown_kept(name: str | None = None) -> list[str]:
    """Shut down the kept hosts named `name` (every kept host when None); returns their names."""
    hosts = kept_hosts(name)
    for host in hosts:
        host.shutdown()
    return [host.name for host in hosts]


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=60)


def _setup_network(netns: str, index: int) -> None:
    outer, net = f"{netns}-h", f"{SUBNET}.{index}"
    _run("ip", "link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", netns)
    _run("ip", "addr", "add", f"{net}.1/24", "dev", outer)
    _run("ip", "link", "set", outer, "up")
    _run("ip", "-n", netns, "link", "set", "lo", "up")
    _run("ip", "-n", netns, "addr", "add", f"{net}.2/24", "dev", "eth0")
    _run("ip", "-n", netns, "link", "set", "eth0", "up")
    _run("ip", "-n", netns, "route", "add", "default", "via", f"{net}.1")


# Kernel settings the hosts need while any runs, each raised to at least this and put back after the last one:
# forwarding for the NAT, and inotify instances: each booted systemd takes several, and past the default 128 a
# new host's PID 1 dies with "Failed to allocate manager object: Too many open files".
SYSCTLS = {"net/ipv4/ip_forward": 1, "fs/inotify/max_user_instances": 8192}


def _raise_sysctls() -> None:
    for name, value in SYSCTLS.items():
        knob, saved = Path("/proc/sys") / name, STATE_DIR / f"sysctl-{name.replace('/', '.')}"
        current = knob.read_text().strip()
        if int(current) < value:
            if not saved.exists():
                saved.write_text(current)
            knob.write_text(f"{value}\n")


def _restore_sysctls() -> None:
    for name in SYSCTLS:
        knob, saved = Path("/proc/sys") / name, STATE_DIR / f"sysctl-{name.replace('/', '.')}"
        if saved.exists():
            knob.write_text(saved.read_text())
            saved.unlink()


def _ensure_nat() -> None:
    _raise_sysctls()
    if _run("nft", "list", "table", "ip", NFT_TABLE, check=False).returncode == 0:
        return
    subprocess.run(["nft", "-f", "-"], input=NAT_RULES, check=True, text=True, timeout=60)


def _cgroup(root: Path, netns: str) -> Path:
    return root / CGROUP_GROUP / netns


def _cgroup_pids(netns: str) -> set[int]:
    pids: set[int] = set()
    for root in cgroup_roots():
        for procs in _cgroup(root, netns).rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in procs.read_text().split())
    return pids


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    """Power a host off through its nspawn process: SIGTERM, then SIGKILL after a bound."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def _process_state(pid: int) -> str:
    """The state letter of process `pid` (R, S, Z, ...), or "" when there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[0]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _stop_pid(pid: int) -> None:
    """Power off a host whose nspawn is not our child (a kept host): SIGTERM, SIGKILL after a bound.

    It counts as gone once it is a zombie: its parent may be a PID 1 that never reaps orphans.
    """
    if pid <= 0 or _comm(pid) != "systemd-nspawn" or _process_state(pid) in ("", "Z"):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while _process_state(pid) not in ("", "Z"):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            break
        time.sleep(0.1)


def _teardown(netns: str) -> None:
    """Kill whatever still runs in the host's cgroups and delete everything it owned; needs the hosts lock."""
    deadline = time.monotonic() + 10
    while (pids := _cgroup_pids(netns)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    _run("ip", "link", "del", f"{netns}-h", check=False)
    if (NETNS_DIR / netns).exists():
        _run("ip", "netns", "del", netns)
    for root in cgroup_roots():
        _remove_cgroup(_cgroup(root, netns))
    remove_tree(NSPAWN_RUN_DIR / "propagate" / netns)
    remove_tree(STATE_DIR / netns)


def _remove_cgroup(top: Path) -> None:
    deadline = time.monotonic() + 10
    while top.exists():
        try:
            for path in sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True) + [top]:
                if path.is_dir():
                    path.rmdir()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _release_shared() -> None:
    """Once no test host is left on the machine, drop the NAT table and the shared mounts."""
    if any(NETNS_DIR.glob(f"{PREFIX}*")):
        return
    if _run("nft", "list", "table", "ip", NFT_TABLE, check=False).returncode == 0:
        _run("nft", "delete", "table", "ip", NFT_TABLE)
    _restore_sysctls()
    for root in cgroup_roots():
        group = root / CGROUP_GROUP
        if group.exists() and not any(p.is_dir() for p in group.iterdir()):
            group.rmdir()
    if NETNS_DIR.is_dir() and not any(NETNS_DIR.iterdir()):
        if _is_mount(NETNS_DIR):
            _run("umount", str(NETNS_DIR), check=False)
        with contextlib.suppress(OSError):
            NETNS_DIR.rmdir()
    if not _nspawn_running():
        remove_tree(NSPAWN_RUN_DIR)


def _nspawn_running() -> bool:
    """Whether any systemd-nspawn runs on the machine (zombies left to a non-reaping PID 1 do not count)."""
    for proc in Path("/proc").glob("[0-9]*"):
        if _comm(int(proc.name)) == "systemd-nspawn" and _process_state(int(proc.name)) not in ("", "Z"):
            return True
    return False


def _reap_stale() -> None:
    """Tear down hosts whose recorded owner process died without shutting them down."""
    for ns in NETNS_DIR.glob(f"{PREFIX}*"):
        try:
            text = (STATE_DIR / ns.name / "owner").read_text().strip()
            if text == KEPT:
                pid = int(json.loads((STATE_DIR / ns.name / "host.json").read_text())["pid"])
                if _comm(pid) != "systemd-nspawn" or _process_state(pid) == "Z":
                    say(f"removing kept test host {ns.name} (its systemd-nspawn {pid} is gone)")
                    _teardown(ns.name)
                continue
            owner = int(text)
        except (OSError, ValueError, KeyError):
            continue
        if not _alive(owner):
            say(f"removing stale test host {ns.name} (owner {owner} is gone)")
            _teardown(ns.name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


atexit.register(shutdown_all)
