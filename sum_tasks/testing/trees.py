"""Build and cache the Debian root trees that test hosts boot from."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

CACHE_DIR = Path("/var/cache/sum-tasks")
TREES_DIR = CACHE_DIR / "trees"
KEY_PATH = CACHE_DIR / "ssh" / "id_ed25519"
MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
SUITES = ("bookworm", "trixie")
RECIPE_VERSION = 1
BUILD_TIMEOUT = 1800.0

BASE_PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "libpam-systemd", "openssh-server", "sudo",
    "iproute2", "python3", "ca-certificates", "libpq5", "locales", "procps", "less",
)
BAKED_PACKAGES = (
    "postgresql", "postgresql-contrib", "postgresql-client", "redis-server", "caddy",
    "ufw", "python3-venv", "python3-pip", "python3-dev", "git", "build-essential",
    "libpq-dev", "curl", "pigz", "zstd", "gzip", "rsync", "acl", "isal", "restic",
)
BAKED_SERVICES = ("postgresql", "redis-server", "caddy")

HOSTS_FILE = """\
127.0.0.1\tlocalhost
::1\t\tlocalhost ip6-localhost ip6-loopback
ff02::1\t\tip6-allnodes
ff02::2\t\tip6-allrouters
"""
FIRSTBOOT_SCRIPT = """\
#!/bin/sh
set -e
name=$(cat /proc/sys/kernel/hostname)
sed -i '/^127\\.0\\.1\\.1[[:space:]]/d' /etc/hosts
printf '127.0.1.1\\t%s\\n' "$name" >>/etc/hosts
ssh-keygen -A
"""
FIRSTBOOT_UNIT = """\
[Unit]
Description=Per-host /etc/hosts entry and SSH host keys (sum-tasks test host)
DefaultDependencies=no
After=local-fs.target
Before=sysinit.target ssh.service ssh.socket

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/sum-tasks-firstboot

[Install]
WantedBy=sysinit.target
"""
SSHD_CONFIG = "PermitRootLogin prohibit-password\nPubkeyAuthentication yes\n"
BASE_SCRIPT = """\
apt-get update
apt-get -y upgrade
update-ca-certificates
sed -i 's/^# *\\(en_US.UTF-8 UTF-8\\)/\\1/' /etc/locale.gen
locale-gen
echo LANG=C.UTF-8 >/etc/default/locale
systemctl enable sum-tasks-firstboot.service ssh.service
apt-get clean
"""


def say(message: str) -> None:
    """Print a progress line on stderr."""
    print(f"[sum-tasks] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def locked(path: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive flock on `path`, waiting at most `timeout` seconds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"could not lock {path} within {timeout:.0f}s") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_key() -> Path:
    """Return the test SSH private key, creating it on first use."""
    with locked(KEY_PATH.with_suffix(".lock"), 60):
        if not KEY_PATH.exists():
            KEY_PATH.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sum-tasks-test",
                 "-f", str(KEY_PATH)],
                check=True, timeout=30,
            )
        KEY_PATH.chmod(0o600)
    return KEY_PATH


def _runner_files() -> dict[str, bytes]:
    """Files copied from the runner into every tree (DNS and extra CA certificates)."""
    resolved = Path("/run/systemd/resolve/resolv.conf")
    files = {"etc/resolv.conf": (resolved if resolved.exists() else Path("/etc/resolv.conf")).read_bytes()}
    for cert in sorted(Path("/usr/local/share/ca-certificates").glob("*.crt")):
        files[f"usr/local/share/ca-certificates/{cert.name}"] = cert.read_bytes()
    return files


def tree_name(suite: str, baked: bool) -> str:
    """Return `<suite>-<base|baked>-<hash>`, the hash covering every input of the recipe."""
    recipe = {
        "version": RECIPE_VERSION,
        "suite": suite,
        "mirror": MIRROR,
        "base": BASE_PACKAGES,
        "baked": BAKED_PACKAGES if baked else None,
        "key": ensure_key().with_suffix(".pub").read_text(),
        "runner": {k: hashlib.sha256(v).hexdigest() for k, v in _runner_files().items()},
    }
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    return f"{suite}-{'baked' if baked else 'base'}-{digest}"


def ensure_tree(suite: str, baked: bool) -> Path:
    """Return the cached root tree for `suite`, building it first if the recipe changed."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}, expected one of {SUITES}")
    base = ensure_tree(suite, baked=False) if baked else None
    name = tree_name(suite, baked)
    final = TREES_DIR / name
    if final.is_dir():
        return final
    with locked(TREES_DIR / f".{name}.lock", BUILD_TIMEOUT):
        if final.is_dir():
            return final
        for stale in TREES_DIR.glob(f".{name}.tmp*"):
            remove_tree(stale)
        tmp = TREES_DIR / f".{name}.tmp{os.getpid()}"
        log = TREES_DIR / f"{name}.log"
        started = time.monotonic()
        say(f"building {name} (log: {log}) ...")
        try:
            with open(log, "w") as out:
                if base is None:
                    _build_base(suite, tmp, out)
                else:
                    _bake(base, tmp, out)
        except BaseException:
            remove_tree(tmp)
            raise
        tmp.rename(final)
        say(f"built {name} in {time.monotonic() - started:.0f}s")
    return final


def _build_base(suite: str, root: Path, log: TextIO) -> None:
    _step(log, "debootstrap", [
        "unshare", "--mount", "--propagation", "private", "debootstrap", "--variant=minbase",
        f"--include={','.join(BASE_PACKAGES)}", suite, str(root), MIRROR,
    ])
    for rel, data in _runner_files().items():
        _write(root / rel, data)
    _write(root / "etc/hosts", HOSTS_FILE)
    (root / "etc/hostname").unlink(missing_ok=True)
    _write(root / "etc/apt/sources.list", "".join(
        f"deb {mirror} {dist} main\n"
        for mirror, dist in ((MIRROR, suite), (MIRROR, f"{suite}-updates"),
                             (SECURITY_MIRROR, f"{suite}-security"))
    ))
    _write(root / "etc/ssh/sshd_config.d/sum-tasks.conf", SSHD_CONFIG)
    _write(root / "usr/local/sbin/sum-tasks-firstboot", FIRSTBOOT_SCRIPT, 0o755)
    _write(root / "etc/systemd/system/sum-tasks-firstboot.service", FIRSTBOOT_UNIT)
    (root / "root/.ssh").mkdir(mode=0o700, exist_ok=True)
    _write(root / "root/.ssh/authorized_keys", ensure_key().with_suffix(".pub").read_bytes(), 0o600)
    _in_tree(root, BASE_SCRIPT, log)
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    _write(root / "etc/machine-id", "", 0o444)
    dbus_id = root / "var/lib/dbus/machine-id"
    if dbus_id.exists() and not dbus_id.is_symlink():
        dbus_id.unlink()


def _bake(base: Path, root: Path, log: TextIO) -> None:
    _step(log, "copy base", ["cp", "-a", "--reflink=auto", str(base), str(root)])
    services = " ".join(BAKED_SERVICES)
    _in_tree(root, f"""\
apt-get update
apt-get install -y {' '.join(BAKED_PACKAGES)}
systemctl enable {services}
apt-get clean
""", log)
    wants = root / "etc/systemd/system/multi-user.target.wants"
    missing = [s for s in BAKED_SERVICES if not os.path.lexists(wants / f"{s}.service")]
    if missing:
        raise RuntimeError(f"services not enabled in {root}: {missing}")


def _in_tree(root: Path, script: str, log: TextIO) -> None:
    """Run a shell script inside the (not booted) tree, with services kept from starting."""
    policy = root / "usr/sbin/policy-rc.d"
    _write(policy, "#!/bin/sh\nexit 101\n", 0o755)
    try:
        _step(log, "configure in tree", [
            "systemd-nspawn", "-q", "-D", str(root), "--register=no", "--keep-unit", "--pipe",
            "--resolv-conf=off", "--timezone=off", "--link-journal=no",
            "--setenv=DEBIAN_FRONTEND=noninteractive", "--setenv=LANG=C.UTF-8",
            "/bin/sh", "-euxc", script,
        ])
    finally:
        policy.unlink(missing_ok=True)


def _step(log: TextIO, title: str, argv: Sequence[str]) -> None:
    started = time.monotonic()
    say(f"  {title} ...")
    log.write(f"### {title}: {' '.join(argv)}\n")
    log.flush()
    result = subprocess.run(argv, check=False, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            timeout=BUILD_TIMEOUT)
    if result.returncode:
        log.flush()
        tail = Path(log.name).read_text(errors="replace").splitlines()[-30:]
        raise RuntimeError(f"{title} failed ({result.returncode}); log {log.name}:\n" + "\n".join(tail))
    say(f"  {title} done in {time.monotonic() - started:.0f}s")


def _write(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    path.chmod(mode)


def remove_tree(path: Path) -> None:
    """Delete a directory tree without ever crossing into a mounted file system."""
    if path.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True, timeout=600)


def remove_unused_trees() -> list[Path]:
    """Delete cached trees whose recipe no longer matches; return what was removed."""
    keep = {tree_name(s, b) for s in SUITES for b in (False, True)}
    removed = [p for p in TREES_DIR.iterdir() if p.is_dir() and p.name not in keep and not p.name.startswith(".")]
    for path in removed:
        remove_tree(path)
    return removed
