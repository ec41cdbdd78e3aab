"""A bounded, steady HTTP load through a host's web server, counting every non-2xx and connection error."""

from __future__ import annotations

import itertools
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
    # (sent, answered, ok) of every request, in monotonic seconds: what the downtime figures are read from.
    events: list[tuple[float, float, bool]] = field(default_factory=list)

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
            sent = time.monotonic()
            try:
                status = self.pool.request("GET", self.path, headers={"Host": self.host}, redirect=False).status
                key = "ok" if 200 <= status < 300 else f"http {status}"
            except urllib3.exceptions.HTTPError as err:
                key = f"error {type(err).__name__}"
            with self._lock:
                self.events.append((sent, time.monotonic(), key == "ok"))
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

    def failure_run(self) -> tuple[int, float]:
        """The longest run of failed requests, in the order they were sent: how many, and the seconds from the first one
        sent to the last one answered (0 for none)."""
        best, run, first = (0, 0.0), 0, 0.0
        for sent, answered, ok in sorted(self.events):
            if ok:
                run = 0
                continue
            run, first = run + 1, sent if run == 0 else first
            best = max(best, (run, answered - first))
        return best

    def longest_gap(self) -> float:
        """The longest time with no successful answer (between two, or from the start or to the end of the load): what
        a visitor saw as the site being down, whether its requests failed or waited."""
        answers = sorted(answered for _, answered, ok in self.events if ok)
        edges = [self.started, *answers, self.started + getattr(self, "seconds", 0.0)]
        return max(b - a for a, b in itertools.pairwise(edges))

    def slowest(self) -> float:
        return max((answered - sent for sent, answered, _ in self.events), default=0.0)

    def downtime(self) -> str:
        """One line: failed requests, the longest run of them, the longest time with no good answer, the slowest request."""
        count, seconds = self.failure_run()
        return (f"{self.failed} of {self.total} requests failed, longest run {count} ({seconds:.2f}s); "
                f"longest time without a good answer {self.longest_gap():.2f}s; slowest request {self.slowest():.2f}s")

    def summary(self) -> str:
        rate = self.total / self.seconds if getattr(self, "seconds", 0) else 0
        return f"{self.total} requests ({rate:.0f}/s), {self.failed} failed: {dict(self.results)} {self.failures[:5]}"
