"""``GET /health/``: JSON status for the deploy tooling and the load balancer.

``database`` and ``cache`` are critical: if either fails the status is
``unhealthy`` with HTTP 503. ``media`` is not: its failure gives ``degraded``
with HTTP 200. All good is ``ok`` with HTTP 200.
"""

import logging
import os
import time
import uuid

from django.conf import settings
from django.core.cache import caches
from django.db import connections
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

logger = logging.getLogger(__name__)


def check_database() -> None:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 1")
        row = cursor.fetchone()
    if row is None or row[0] != 1:
        raise RuntimeError(f"SELECT 1 returned {row!r}")


def check_cache() -> None:
    cache = caches["default"]
    key = f"health:{uuid.uuid4().hex}"
    token = uuid.uuid4().hex
    cache.set(key, token, timeout=30)
    try:
        value = cache.get(key)
    finally:
        cache.delete(key)
    if value != token:
        raise RuntimeError("cache round trip returned a different value")


def check_media() -> None:
    root = str(settings.MEDIA_ROOT)
    if not os.path.isdir(root):
        raise RuntimeError(f"MEDIA_ROOT {root} does not exist")
    if not os.access(root, os.W_OK | os.X_OK):
        raise RuntimeError(f"MEDIA_ROOT {root} is not writable")


# (name, check, critical). A check passes by returning and fails by raising.
CHECKS = [
    ("database", check_database, True),
    ("cache", check_cache, True),
    ("media", check_media, False),
]


def run_checks() -> tuple[str, dict]:
    results = {}
    status = "ok"
    for name, check, critical in CHECKS:
        started = time.monotonic()
        try:
            check()
        except Exception as exc:  # noqa: BLE001 - any failure is a failed check
            logger.warning("health check %s failed: %s: %s", name, type(exc).__name__, exc)
            result = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
            if critical:
                status = "unhealthy"
            elif status == "ok":
                status = "degraded"
        else:
            result = {"status": "ok"}
        result["critical"] = critical
        result["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
        results[name] = result
    return status, results


@never_cache
@require_safe
def health(request):
    status, checks = run_checks()
    body = {
        "status": status,
        "version": {
            "git_sha": os.environ.get("GIT_SHA") or None,
            "release": os.environ.get("SUM_RELEASE_ID") or None,
        },
        "checks": checks,
    }
    return JsonResponse(body, status=503 if status == "unhealthy" else 200)
