"""Shared pieces of the end-to-end tests: a client repo wired to booted hosts, a webhook receiver."""

from contextlib import ExitStack

import pytest
from e2e_support import receiving, site_config

from sum_tasks.testing.client import make_client


@pytest.fixture
def client_for(tmp_path):
    """`client_for(host, user="root", **sum_changes)`: a client repo whose `vps` alias is `host`."""

    def make(host, user="root", vendored=False, **changes):
        return make_client(tmp_path / "client", site_config(host, **changes), {"vps": (host, user)}, vendored=vendored)

    return make


@pytest.fixture
def webhook():
    """`webhook(host)`: a receiver `host` reaches, and its base URL, serving until the test ends (for hosts booted in the test)."""
    with ExitStack() as stack:
        yield lambda host: stack.enter_context(receiving(host))
