"""What the end-to-end tests share: the example site's `sum` settings, and which colour serves it."""

from sum_tasks.commands.health import socket_colour

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


def live_colour(host) -> str:
    """The colour Caddy's live.sock names on `host`."""
    return socket_colour(host.ssh("readlink /srv/sum/acme/live.sock").stdout)
