"""pytest plugin: the `e2e` marker and a module-scoped `host_factory` fixture."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from .hosts import BOOT_TIMEOUT, TestHost, boot_host, boot_hosts, boot_problem


class HostFactory:
    """Boots hosts on demand and shuts all of them down when the test module that asked for them ends."""

    def __init__(self, config: pytest.Config | None = None) -> None:
        self.hosts: list[TestHost] = []
        self._config = config

    def _uncaptured(self) -> contextlib.AbstractContextManager[None]:
        """Let build and boot progress reach the terminal while pytest captures output."""
        capman = self._config.pluginmanager.getplugin("capturemanager") if self._config else None
        return capman.global_and_fixture_disabled() if capman else contextlib.nullcontext()

    def __call__(self, suite: str = "bookworm", baked: bool = True, name: str | None = None,
                 timeout: float = BOOT_TIMEOUT) -> TestHost:
        """Boot one host (see `boot_host`)."""
        with self._uncaptured():
            host = boot_host(suite, baked, name, timeout)
        self.hosts.append(host)
        return host

    def many(self, *specs: Mapping[str, Any]) -> list[TestHost]:
        """Boot several hosts concurrently, e.g. `many({"suite": "bookworm"}, {"suite": "trixie"})`."""
        with self._uncaptured():
            hosts = boot_hosts(*specs)
        self.hosts.extend(hosts)
        return hosts

    def shutdown_all(self) -> None:
        """Shut down every host this factory booted."""
        for host in self.hosts:
            host.shutdown()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: end-to-end test against real booted Debian hosts")


@pytest.fixture(scope="module")
def host_factory(pytestconfig: pytest.Config) -> Iterator[HostFactory]:
    """Boot real Debian hosts for one test module, shut down when it ends (so a long suite never holds more than a
    module's hosts); fails (never skips) when this machine cannot boot them."""
    problem = boot_problem()
    if problem:
        pytest.fail(f"cannot boot end-to-end test hosts: {problem}", pytrace=False)
    factory = HostFactory(pytestconfig)
    try:
        yield factory
    finally:
        factory.shutdown_all()
