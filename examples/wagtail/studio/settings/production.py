"""Production: Django's deployment checklist, with everything host-specific read from the environment.

sum_tasks writes the variables to ``/srv/sum/studio/.env`` at provision (the secrets are generated there
and never leave the server) and adds ``GIT_SHA`` for each release. ``manage.py check --deploy`` is clean
with these settings.
"""

import os

from django.core.exceptions import ImproperlyConfigured

from .base import *
from .base import BASE_DIR


def env(name: str, fallback: str | None = None) -> str:
    """The variable's value; without a fallback it must be set and not empty."""
    value = os.environ.get(name, "").strip()
    if value:
        return value
    if fallback is None:
        raise ImproperlyConfigured(f"set {name} in the environment (the site's .env on the server)")
    return fallback


def env_list(name: str) -> list[str]:
    return [item.strip() for item in env(name, "").split(",") if item.strip()]


DEBUG = False
SECRET_KEY = env("DJANGO_SECRET_KEY")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS")
# Every allowed host may post forms (the Wagtail admin) over HTTPS; a leading dot allows subdomains.
CSRF_TRUSTED_ORIGINS = ["https://" + ("*" + host if host.startswith(".") else host) for host in ALLOWED_HOSTS if host != "*"]

# --- HTTPS ------------------------------------------------------------------------------------------
# Caddy terminates TLS and tells the app the original scheme; the Host header is the one the client sent
# (X-Forwarded-Host is not trusted). Plain-HTTP requests that reach the app anyway are redirected.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
USE_X_FORWARDED_HOST = False
SECURE_SSL_REDIRECT = True
SECURE_HSTS_SECONDS = 31_536_000
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "strict-origin-when-cross-origin"
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
X_FRAME_OPTIONS = "DENY"  # Wagtail's preview views allow their own frames (same origin) explicitly

# --- database ---------------------------------------------------------------------------------------
_db = {
    "ENGINE": "django.db.backends.postgresql",
    "NAME": env("DJANGO_DB_NAME", "studio"),
    "USER": env("DJANGO_DB_USER", "studio"),
    "PASSWORD": env("DJANGO_DB_PASSWORD", ""),
    "HOST": env("DJANGO_DB_HOST", "127.0.0.1"),
    "PORT": env("DJANGO_DB_PORT", "5432"),
    "CONN_MAX_AGE": 60,
    "CONN_HEALTH_CHECKS": True,
    # Give up on an unreachable server within 3 s, so /health/ reports it instead of hanging.
    "OPTIONS": {"connect_timeout": 3},
}
DATABASES = {"default": _db}

# --- Redis: the cache, Celery's broker and its results (the site's own Redis, on a unix socket) --------
REDIS_URL = env("REDIS_URL", "redis://127.0.0.1:6379/0")
_redis_cache = {
    "BACKEND": "django.core.cache.backends.redis.RedisCache",
    "LOCATION": REDIS_URL,
    "KEY_PREFIX": "studio",
    "TIMEOUT": 600,
    # Fail within a second when Redis is down, so /health/ says so at once.
    "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
}
CACHES = {"default": _redis_cache}
CELERY_BROKER_URL = env("CELERY_BROKER_URL", "redis://127.0.0.1:6379/1")
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", "redis://127.0.0.1:6379/2")

# --- files ------------------------------------------------------------------------------------------
# collectstatic runs on every release into the shared static directory; hashed names let the old release
# keep serving its own CSS and JS while the new one starts.
STATIC_ROOT = env("DJANGO_STATIC_ROOT", str(BASE_DIR / "staticfiles"))
MEDIA_ROOT = env("DJANGO_MEDIA_ROOT", str(BASE_DIR / "media"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"},
}

# --- Wagtail ----------------------------------------------------------------------------------------
SITE_DOMAIN = env("SITE_DOMAIN", ALLOWED_HOSTS[0] if ALLOWED_HOSTS else "localhost")
WAGTAIL_SITE_NAME = env("WAGTAIL_SITE_NAME", "Studio")
WAGTAILADMIN_BASE_URL = env("WAGTAILADMIN_BASE_URL", f"https://{SITE_DOMAIN}")

# --- logging: everything to stderr, which systemd sends to the journal (with timestamps) ---------------
_level = env("DJANGO_LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"journal": {"format": "[{levelname}] {name}: {message}", "style": "{"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "journal"}},
    "root": {"handlers": ["stderr"], "level": _level},
    "loggers": {
        # Django's own loggers propagate to the root. Quietened: template debug noise, and the two lines
        # django-tasks logs for each of Wagtail's background tasks (search index, references).
        "django.template": {"level": "WARNING"},
        "django_tasks": {"level": "WARNING"},
    },
}
