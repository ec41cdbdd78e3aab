"""Shared pieces of the end-to-end tests: a client repo wired to booted hosts."""

import pytest

from sum_tasks.testing.client import make_client

SITE = {
    "site_slug": "acme",
    "domains": ["acme.test", "www.acme.test"],
    "project_module": "examplesite",
    "tls": "internal",
    "hosts": ["vps"],
}


def site_config(host, **changes):
    """The e2e site's `sum` settings for `host`, letting the deploy user in with the test key."""
    key = host.key_path.with_suffix(".pub").read_text().strip()
    return {**SITE, "authorized_keys": [key], **changes}


@pytest.fixture
def client_for(tmp_path):
    """`client_for(host, user="root", **sum_changes)`: a client repo whose `vps` alias is `host`."""

    def make(host, user="root", vendored=False, **changes):
        return make_client(tmp_path / "client", site_config(host, **changes), {"vps": (host, user)}, vendored=vendored)

    return make
