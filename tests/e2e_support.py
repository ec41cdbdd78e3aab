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


def as_app(host, unit: str, command: str):
    """Run `command` with exactly the credentials of `unit`'s running main process, as a compromised app has them:
    its uid, gid and supplementary groups, inside its mount namespace, with no capabilities and no new privileges."""
    pid = host.ssh(f"systemctl show -p MainPID --value {unit}").stdout.strip()
    assert pid not in ("", "0"), f"{unit} is not running"
    status = dict(line.split(":", 1) for line in host.ssh(f"cat /proc/{pid}/status").stdout.splitlines() if ":" in line)
    uid, gid = status["Uid"].split()[0], status["Gid"].split()[0]
    groups = ",".join(status["Groups"].split())
    drop = f"--reuid={uid} --regid={gid} " + (f"--groups={groups}" if groups else "--clear-groups")
    quoted = "'" + command.replace("'", "'\\''") + "'"
    return host.ssh(f"nsenter -t {pid} -m -- setpriv {drop} --inh-caps=-all --bounding-set=-all --no-new-privs -- sh -c {quoted}",
                    check=False)
