"""Asking the app how it is: `/health/` on a colour's own socket, and through Caddy."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from fabric import Connection

from .config import Site
from .remote import q, run

HEALTHY = ("ok", "degraded")


@dataclass(frozen=True)
class Health:
    code: int
    status: str
    sha: str
    body: str

    @property
    def ok(self) -> bool:
        """200 with ok or degraded; anything else (503, no answer, not JSON) is a failure."""
        return self.code == 200 and self.status in HEALTHY

    def describe(self) -> str:
        if self.code == 0:
            return "no answer"
        return f"HTTP {self.code} {self.status or '(no status)'}" + (f" at {self.sha[:12]}" if self.sha else "")


def parse_health(code: int, body: str) -> Health:
    try:
        data = json.loads(body)
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    version = data.get("version") if isinstance(data.get("version"), dict) else {}
    return Health(code, str(data.get("status") or ""), str(version.get("git_sha") or ""), body)


def curl_health(site: Site, socket: str | None = None, timeout: float = 5.0) -> str:
    """The curl command that prints the body, a newline and the HTTP code of /health/."""
    host = site.primary_domain
    if socket:
        target = f"--unix-socket {q(socket)} http://{host}/health/"
    else:
        scheme, port = ("http", 80) if site.tls == "off" else ("https", 443)
        target = f"-k --resolve {q(f'{host}:{port}:127.0.0.1')} {scheme}://{host}/health/"
    return f"curl -sS -m {timeout:g} -o - -w '\\n%{{http_code}}' {target}"


def probe(c: Connection, site: Site, socket: str | None = None) -> Health:
    """/health/ once, on a colour's socket (`socket`) or through Caddy on the host itself."""
    result = run(c, curl_health(site, socket), warn=True)
    body, _, code = result.stdout.rpartition("\n")
    return parse_health(int(code) if code.strip().isdigit() else 0, body)


def wait_healthy(c: Connection, site: Site, socket: str | None = None, timeout: float | None = None) -> Health:
    """Probe until healthy or `timeout` (default ``sum.health_timeout``) runs out; returns the last answer."""
    deadline = time.monotonic() + (timeout if timeout is not None else site.health_timeout)
    while True:
        health = probe(c, site, socket)
        if health.ok or time.monotonic() >= deadline:
            return health
        time.sleep(0.25)


def colour_socket(site: Site, colour: str) -> str:
    return f"{site.run_dir}/{colour}.sock"
