"""A bounded, steady HTTP load through a host's web server, counting every non-2xx and connection error."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Self

import urllib3

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)


def https_pool(ip: str, domain: str, timeout: float = 10.0, maxsize: int = 1) -> urllib3.HTTPSConnectionPool:
    """HTTPS to Caddy at `ip` for `domain` (SNI set, certificate not checked: test hosts use Caddy's internal CA)."""
    return urllib3.HTTPSConnectionPool(ip, 443, server_hostname=domain, assert_hostname=False, cert_reqs="CERT_NONE",
                                       retries=False, timeout=timeout, maxsize=maxsize)


def health_through_caddy(ip: str, domain: str) -> tuple[int, dict]:
    """HTTP status and JSON body (``{}`` if it is not JSON) of ``https://<domain>/health/`` served by `ip`."""
    response = https_pool(ip, domain).request("GET", "/health/", headers={"Host": domain})
    try:
        body = json.loads(response.data)
    except ValueError:
        body = {}
    return response.status, body if isinstance(body, dict) else {}


@dataclass
class Load:
    """GET `path` at `rate` requests/s from `workers` threads until stopped (or `max_seconds`)."""

    ip: str
    host: str
    path: str = "/"
    https: bool = True
    rate: float = 40.0
    workers: int = 4
    max_seconds: float = 600.0
    timeout: float = 10.0
    results: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        if self.https:
            self.pool = https_pool(self.ip, self.host, self.timeout, self.workers)
        else:
            self.pool = urllib3.HTTPConnectionPool(self.ip, 80, maxsize=self.workers, retries=False, timeout=self.timeout)

    def _worker(self, offset: float) -> None:
        interval = self.workers / self.rate
        next_at = time.monotonic() + offset
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            delay = next_at - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            next_at += interval
            try:
                status = self.pool.request("GET", self.path, headers={"Host": self.host}, redirect=False).status
                key = "ok" if 200 <= status < 300 else f"http {status}"
            except urllib3.exceptions.HTTPError as err:
                key = f"error {type(err).__name__}"
            with self._lock:
                self.results[key] += 1
                if key != "ok" and len(self.failures) < 20:
                    self.failures.append(f"{time.strftime('%H:%M:%S')} {key}")

    def __enter__(self) -> Self:
        self.started = time.monotonic()
        for i in range(self.workers):
            thread = threading.Thread(target=self._worker, args=(i / self.rate,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 1)
        self.seconds = time.monotonic() - self.started

    @property
    def total(self) -> int:
        return sum(self.results.values())

    @property
    def failed(self) -> int:
        return self.total - self.results["ok"]

    def summary(self) -> str:
        rate = self.total / self.seconds if getattr(self, "seconds", 0) else 0
        return f"{self.total} requests ({rate:.0f}/s), {self.failed} failed: {dict(self.results)} {self.failures[:5]}"
