"""What the end-to-end tests share: the example site's `sum` settings, which colour serves it, a webhook receiver."""

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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


PEBBLE = "/etc/pebble"


def start_pebble(pebble, site_ip: str, names: str) -> str:
    """Install and start Pebble on `pebble`, with `names` (space-separated) resolving to `site_ip`; returns the PEM its HTTPS
    is served with."""
    pebble.ssh("apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q pebble >/dev/null", timeout=600)
    pebble.ssh(f"mkdir -p {PEBBLE} && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3 -subj /CN=pebble "
               f"-addext subjectAltName=IP:{pebble.ip} -keyout {PEBBLE}/key.pem -out {PEBBLE}/cert.pem 2>/dev/null")
    config = {"pebble": {"listenAddress": "0.0.0.0:14000", "managementListenAddress": "0.0.0.0:15000",
                         "certificate": f"{PEBBLE}/cert.pem", "privateKey": f"{PEBBLE}/key.pem",
                         "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "", "externalAccountBindingRequired": False}}
    pebble.ssh(f"cat > {PEBBLE}/config.json <<'EOF'\n{json.dumps(config)}\nEOF")
    # Pebble validates challenges against the names as its resolver sees them: the site's host.
    pebble.ssh(f"echo '{site_ip} {names}' >> /etc/hosts")
    pebble.ssh(f"systemd-run --unit pebble -E PEBBLE_VA_NOSLEEP=1 -E PEBBLE_WFE_NONCEREJECT=0 /usr/bin/pebble -config {PEBBLE}/config.json")
    pebble.ssh("for i in $(seq 50); do curl -sk https://127.0.0.1:14000/dir >/dev/null && exit 0; sleep 0.2; done; exit 1")
    return pebble.ssh(f"cat {PEBBLE}/cert.pem").stdout


def served(pebble, site_ip: str, name: str, path: str = "/") -> str:
    """`status redirect_url` of https://name/path from the Pebble host, verified against Pebble's issuing root only."""
    return pebble.ssh(f"curl -s -o /dev/null -w '%{{http_code}} %{{redirect_url}}' --cacert /root/pebble-root.pem "
                      f"--resolve {name}:443:{site_ip} 'https://{name}{path}'", check=False).stdout


class Receiver(ThreadingHTTPServer):
    """Records every request: (method, path, body)."""

    def __init__(self, address: str) -> None:
        self.seen: list[tuple[str, str, bytes]] = []
        super().__init__((address, 0), Handler)

    def wait(self, count: int, timeout: float = 60) -> list[tuple[str, str, bytes]]:
        deadline = time.monotonic() + timeout
        while len(self.seen) < count and time.monotonic() < deadline:
            time.sleep(0.2)
        return self.seen


class Handler(BaseHTTPRequestHandler):
    def _record(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append((self.command, self.path, body))
        self.send_response(200)
        self.end_headers()

    do_GET = do_POST = _record

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def receiving(host) -> Iterator[tuple[Receiver, str]]:
    """A `Receiver` on this machine's side of `host`'s link, serving while the block runs, and its base URL."""
    receiver = Receiver(host.ip.rsplit(".", 1)[0] + ".1")
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        yield receiver, f"http://{receiver.server_address[0]}:{receiver.server_address[1]}"
    finally:
        receiver.shutdown()
        receiver.server_close()
