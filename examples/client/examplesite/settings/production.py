"""Production settings: everything host-specific comes from the environment.

The deploy tooling writes these variables to ``/srv/sum/<site_slug>/.env`` and
adds ``GIT_SHA`` and ``SUM_RELEASE_ID`` (read by the health view, not here).
"""

import os

from django.core.exceptions import ImproperlyConfigured

from .base import *
from .base import BASE_DIR


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def _require(name: str) -> str:
    value = _env(name)
    if not value:
        raise ImproperlyConfigured(f"The {name} environment variable is required.")
    return value


def _csrf_origins(hosts: list[str]) -> list[str]:
    """Both schemes for every host: the site may be served over plain HTTP in tests."""
    origins = []
    for host in hosts:
        if host == "*":
            continue
        if host.startswith("."):
            host = "*" + host
        origins += [f"https://{host}", f"http://{host}"]
    return origins


SECRET_KEY = _require("DJANGO_SECRET_KEY")
DEBUG = False

ALLOWED_HOSTS = [h.strip() for h in _env("ALLOWED_HOSTS").split(",") if h.strip()]
CSRF_TRUSTED_ORIGINS = _csrf_origins(ALLOWED_HOSTS)

# Caddy terminates TLS, redirects to HTTPS and sets X-Forwarded-Proto. No
# SECURE_SSL_REDIRECT or HSTS here: the site may be served over plain HTTP in
# tests. The site has no forms or sessions, so secure-only cookies cost nothing.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
CSRF_COOKIE_SECURE = True
SESSION_COOKIE_SECURE = True
SILENCED_SYSTEM_CHECKS = ["security.W004", "security.W008"]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _env("DJANGO_DB_NAME", "examplesite"),
        "USER": _env("DJANGO_DB_USER"),
        "PASSWORD": _env("DJANGO_DB_PASSWORD"),
        "HOST": _env("DJANGO_DB_HOST"),
        "PORT": _env("DJANGO_DB_PORT"),
        # Fail fast (the health check must answer quickly when PostgreSQL is down).
        "OPTIONS": {"connect_timeout": 3},
    }
}

REDIS_URL = _env("REDIS_URL", "redis://127.0.0.1:6379/0")

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "examplesite",
        # Short timeouts so /health/ reports an unreachable Redis within ~1 s.
        "OPTIONS": {
            "socket_connect_timeout": 1,
            "socket_timeout": 1,
        },
    }
}

STATIC_ROOT = _env("DJANGO_STATIC_ROOT") or str(BASE_DIR / "staticfiles")
MEDIA_ROOT = _env("DJANGO_MEDIA_ROOT") or str(BASE_DIR / "media")

# Everything to stderr: under systemd that is the journal, which adds timestamps.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
            "formatter": "plain",
        },
    },
    "root": {"handlers": ["stderr"], "level": _env("DJANGO_LOG_LEVEL", "INFO")},
    "loggers": {
        "django": {
            "handlers": ["stderr"],
            "level": _env("DJANGO_LOG_LEVEL", "INFO"),
            "propagate": False,
        },
    },
}
