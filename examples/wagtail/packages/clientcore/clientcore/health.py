"""``GET /health/``: how the site is, as JSON, for the deploy tooling and uptime monitors.

The answer is ``{"status": ..., "checks": {...}, "version": {"git_sha": ...}}``:

* ``ok`` (HTTP 200): every check passed;
* ``degraded`` (HTTP 200): only non-critical checks failed (the site serves, something needs a look);
* ``unhealthy`` (HTTP 503): a critical check failed; the deploy tooling never switches to such a release.

Critical: the database answers ``SELECT 1``, the default cache gives back what was put in it, and
libmagic (which upload validation needs) recognises a PNG. Not critical: ``MEDIA_ROOT`` exists and is
writable (uploads fail without it, pages still render).
"""

import logging
import os
import secrets
import time
from struct import pack
from zlib import crc32

from django.conf import settings
from django.core.cache import caches
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

log = logging.getLogger("clientcore.health")


def _png_head() -> bytes:
    """The first bytes of a 1x1 PNG: the signature and a complete IHDR chunk (libmagic wants both)."""
    ihdr = pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + pack(">I", len(ihdr)) + b"IHDR" + ihdr + pack(">I", crc32(b"IHDR" + ihdr))


PNG_HEAD = _png_head()


class CheckFailed(Exception):
    """A check that ran but found something wrong (any other exception counts as a failure too)."""


def database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        (one,) = cursor.fetchone()
    if one != 1:
        raise CheckFailed(f"SELECT 1 gave {one!r}")
    return connection.vendor


def cache_round_trip() -> str:
    cache = caches["default"]
    key = "clientcore:health:" + secrets.token_hex(8)
    sent = secrets.token_hex(16)
    try:
        cache.set(key, sent, timeout=15)
        got = cache.get(key)
    finally:
        cache.delete(key)
    if got != sent:
        raise CheckFailed("the value read back differs from the one written")
    return type(cache).__name__


def libmagic() -> str:
    import magic  # here, not at the top: a missing libmagic is this check's failure, not an import error

    found = magic.from_buffer(PNG_HEAD, mime=True)
    if found != "image/png":
        raise CheckFailed(f"a PNG header was taken for {found}")
    return found


def media_root() -> str:
    root = os.fspath(settings.MEDIA_ROOT)
    if not os.path.isdir(root):
        raise CheckFailed(f"{root} is missing")
    if not os.access(root, os.W_OK | os.X_OK):
        raise CheckFailed(f"{root} is not writable by this process")
    return root


# name -> (the check, whether its failure makes the site unhealthy)
CHECKS = {
    "database": (database, True),
    "cache": (cache_round_trip, True),
    "libmagic": (libmagic, True),
    "media": (media_root, False),
}


def run_checks() -> dict:
    """Run every check; each reports ok, how long it took and what it saw (or why it failed)."""
    report = {}
    for name, (check, critical) in CHECKS.items():
        began = time.perf_counter()
        entry = {"critical": critical}
        try:
            entry["detail"] = check()
            entry["ok"] = True
        except Exception as exc:  # noqa: BLE001 - whatever goes wrong is this check's failure
            entry["ok"] = False
            entry["detail"] = f"{exc.__class__.__name__}: {exc}"
            log.warning("health: %s failed (%s)", name, entry["detail"])
        entry["ms"] = round((time.perf_counter() - began) * 1000, 1)
        report[name] = entry
    return report


def overall(report: dict) -> str:
    failed = [entry for entry in report.values() if not entry["ok"]]
    if any(entry["critical"] for entry in failed):
        return "unhealthy"
    return "degraded" if failed else "ok"


@never_cache
@require_safe
def health_view(request: HttpRequest) -> JsonResponse:
    report = run_checks()
    status = overall(report)
    payload = {
        "status": status,
        "checks": report,
        "version": {"git_sha": os.environ.get("GIT_SHA", "")},
    }
    return JsonResponse(payload, status=503 if status == "unhealthy" else 200)
