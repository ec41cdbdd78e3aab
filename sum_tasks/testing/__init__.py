"""Real-host test harness: Debian trees booted with systemd-nspawn, reachable over ssh."""

from .hosts import (
    HostBootError,
    HostCommandError,
    TestHost,
    boot_host,
    boot_hosts,
    boot_problem,
    kept_hosts,
    shutdown_all,
    shutdown_kept,
)
from .trees import BAKED_PACKAGES, BASE_PACKAGES, RECIPE_VERSION, SUITES, ensure_key, ensure_tree

__all__ = [
    "BAKED_PACKAGES",
    "BASE_PACKAGES",
    "RECIPE_VERSION",
    "SUITES",
    "HostBootError",
    "HostCommandError",
    "TestHost",
    "boot_host",
    "boot_hosts",
    "boot_problem",
    "ensure_key",
    "ensure_tree",
    "kept_hosts",
    "shutdown_all",
    "shutdown_kept",
]
