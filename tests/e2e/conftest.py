"""Shared pieces of the end-to-end tests: a client repo wired to booted hosts."""

import pytest
from e2e_support import site_config

from sum_tasks.testing.client import make_client


@pytest.fixture
def client_for(tmp_path):
    """`client_for(host, user="root", **sum_changes)`: a client repo whose `vps` alias is `host`."""

    def make(host, user="root", vendored=False, **changes):
        return make_client(tmp_path / "client", site_config(host, **changes), {"vps": (host, user)}, vendored=vendored)

    return make
