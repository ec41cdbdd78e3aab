"""A client repo on disk (fabfile.py, fabric.yaml, ssh config) and the real `fab` command run in it."""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .hosts import TestHost

FABFILE = '''"""Client fabfile: the sum_tasks namespace, plus this project's own tasks."""

from sum_tasks import namespace

ns = namespace()
'''
LIBRARY_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Client:
    """A client directory whose `fab` talks to test hosts by alias."""

    path: Path
    python: str = sys.executable

    def fab(self, *args: str, check: bool = True, timeout: float = 1800.0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``fab ARGS`` in the client directory; output is also echoed for the test log."""
        argv = [self.python, "-m", "fabric", *args]
        result = subprocess.run(argv, cwd=self.path, capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})}, check=False)
        sys.stdout.write(f"$ fab {' '.join(args)}\n{result.stdout}{result.stderr}(exit {result.returncode})\n")
        if check and result.returncode:
            raise AssertionError(f"fab {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def fab_in_terminal(self, *args: str, answers: list[tuple[str, str]], timeout: float = 600.0) -> tuple[int, str]:
        """Run ``fab ARGS`` on a pseudo-terminal, as an operator types it: each `(prompt regex, line)` of `answers` is
        typed, in order, once its prompt appears. Returns the exit status and everything the terminal showed."""
        pid, fd = pty.fork()
        if pid == 0:  # the child: fab, its stdin, stdout and stderr the terminal
            os.chdir(self.path)
            os.execv(self.python, [self.python, "-m", "fabric", *args])
        shown, answered, pending = b"", 0, list(answers)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if not select.select([fd], [], [], 1)[0]:
                    continue
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                shown += chunk
                if pending and re.search(pending[0][0], shown[answered:].decode(errors="replace")):
                    os.write(fd, pending.pop(0)[1].encode() + b"\r")
                    answered = len(shown)
            else:
                os.kill(pid, signal.SIGTERM)
                raise AssertionError(f"fab {' '.join(args)} still running after {timeout:g}s:\n{shown.decode(errors='replace')}")
        finally:
            os.close(fd)
        status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        text = shown.decode(errors="replace")
        sys.stdout.write(f"$ fab {' '.join(args)}  (on a terminal)\n{text}(exit {status})\n")
        return status, text

    def configure(self, sum_config: dict[str, Any]) -> None:
        """Replace the `sum` settings in fabric.yaml."""
        data = yaml.safe_load((self.path / "fabric.yaml").read_text())
        data["sum"] = sum_config
        (self.path / "fabric.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def make_client(path: Path, sum_config: dict[str, Any], hosts: dict[str, tuple[TestHost, str]],
                vendored: bool = False, fabfile: str = FABFILE) -> Client:
    """Write a client repo at `path`: ``hosts`` maps ssh aliases to (host, user).

    With `vendored`, ``sum_tasks/`` (templates included) is copied in, as a client repo that
    vendors the library would have it; otherwise the installed package is used.
    """
    path.mkdir(parents=True, exist_ok=True)
    (path / "fabfile.py").write_text(fabfile)
    ssh_config = path / "ssh_config"
    ssh_config.write_text("".join(host.ssh_config(alias, user) for alias, (host, user) in hosts.items()))
    key = next(iter(hosts.values()))[0].key_path if hosts else ""
    config = {
        "sum": sum_config,
        "ssh_config_path": str(ssh_config),
        "connect_kwargs": {"key_filename": [str(key)], "look_for_keys": False, "allow_agent": False} if key else {},
        "timeouts": {"connect": 10},
    }
    (path / "fabric.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    if vendored:
        shutil.copytree(LIBRARY_ROOT / "sum_tasks", path / "sum_tasks", ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    return Client(path)
