"""Asking the app how it is: `/health/` on a colour's own socket, and through Caddy."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..configuration import Site
from .script import Script, q

HEALTHY = ("ok", "degraded")


# What /health/ answered: the HTTP code (0: no answer), the status and SHA it reports, the body, a redirect's Location.
@dataclass(frozen=True)
class Health:
    code: int
    status: str
    sha: str
    body: str
    location: str = ""

    def describe(self) -> str:
        if self.code == 0:
            return "no answer"
        if 300 <= self.code < 400:
            return f"HTTP {self.code} redirect to {self.location or '(no Location)'}"
        return f"HTTP {self.code} {self.status or '(no status)'}" + (f" at {self.sha[:12]}" if self.sha else "")

    @property
    def ok(self) -> bool:
        """200 with ok or degraded; anything else (503, no answer, not JSON) is a failure."""
        return self.code == 200 and self.status in HEALTHY


def parse_health(code: int, body: str, location: str = "") -> Health:
    try:
        data = json.loads(body)
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    version = data.get("version") if isinstance(data.get("version"), dict) else {}
    return Health(code, str(data.get("status") or ""), str(version.get("git_sha") or ""), body, location)


def proxy_headers(site: Site) -> str:
    """curl arguments for the headers Caddy's reverse_proxy sends the app, so a probe on a colour's socket is seen as
    real traffic is (an app with ``SECURE_SSL_REDIRECT`` and ``SECURE_PROXY_SSL_HEADER`` answers it, not redirects it)."""
    scheme = "http" if site.tls == "off" else "https"
    return (f"-H {q('X-Forwarded-Proto: ' + scheme)} -H 'X-Forwarded-For: 127.0.0.1' "
            f"-H {q('X-Forwarded-Host: ' + site.primary_domain)}")


def curl_target(site: Site, path: str, socket: str | None = None) -> str:
    """curl arguments reaching `path` on a colour's socket, or through Caddy on the host itself (no DNS needed)."""
    host = site.primary_domain
    if socket:
        return f"{proxy_headers(site)} --unix-socket {q(socket)} http://{host}{path}"
    scheme, port = ("http", 80) if site.tls == "off" else ("https", 443)
    return f"-k --resolve {q(f'{host}:{port}:127.0.0.1')} {scheme}://{host}{path}"


def curl_health(site: Site, socket: str | None = None, timeout: float = 5.0) -> str:
    """The curl command that prints the body of /health/, then a line with the redirect's Location (or nothing), then the HTTP code."""
    return f"curl -sS -m {timeout:g} -o - -w '\\n%{{redirect_url}}\\n%{{http_code}}' {curl_target(site, '/health/', socket)}"


def curl_smoke(site: Site, path: str) -> str:
    """One curl, one TLS connection through Caddy: the HTTP code of `path` and a newline, then what `curl_health` prints."""
    page = f"-s -m 5 -o /dev/null -w '%{{http_code}}\\n' {curl_target(site, path)}"
    return f"curl {page} --next {curl_health(site).removeprefix('curl ')}"


def wait_script(site: Site, socket: str | None, seconds: int) -> str:
    """Shell that polls /health/ every 50 ms until it answers 200 or `seconds` pass, then prints the last answer.

    One brace group, so `x && <this>` skips all of it when x fails; `$out` holds the answer afterwards.
    """
    return (
        f"{{ end=$(( $(date +%s) + {seconds} )); "
        f"while :; do out=$({curl_health(site, socket, timeout=min(5, max(seconds, 1)))}); "
        "[ \"$(printf '%s' \"$out\" | tail -n 1)\" = 200 ] && break; "
        "[ \"$(date +%s)\" -ge \"$end\" ] && break; sleep 0.05; done; printf '%s' \"$out\"; }"
    )


def wait(site: Site, socket: str | None = None, timeout: float | None = None) -> Script:
    """Probe until /health/ answers 200 or `timeout` (default ``sum.health_timeout``) runs out; prints the last answer.

    The polling loop runs on the host, so waiting costs one round trip, not one per probe.
    """
    seconds = int(timeout if timeout is not None else site.health_timeout)
    return Script("wait for /health/", wait_script(site, socket, seconds))


def parse_answer(stdout: str) -> Health:
    """The `Health` in the output of `curl_health` or `wait_script`."""
    rest, _, code = stdout.rstrip("\n").rpartition("\n")
    body, _, location = rest.rpartition("\n")
    return parse_health(int(code) if code.strip().isdigit() else 0, body, location.strip())


def socket_colour(target: str) -> str:
    """The colour a socket path names (what `readlink live.sock` prints); '' for none."""
    return target.strip().rsplit("/", 1)[-1].removesuffix(".sock")


def smoke(site: Site, path: str = "/sitemap.xml") -> Script:
    """Through Caddy on the host: the HTTP code of `path`, then /health/ (one curl, one TLS connection)."""
    return Script("smoke check through caddy", curl_smoke(site, path))
