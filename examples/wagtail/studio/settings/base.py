"""Settings every environment shares. Nothing here reads the environment: ``production`` does."""

from pathlib import Path

# The repository's top level: the release directory on the server.
BASE_DIR = Path(__file__).resolve().parents[2]

DEBUG = False

ROOT_URLCONF = "studio.urls"
WSGI_APPLICATION = "studio.wsgi.application"

INSTALLED_APPS = [
    # This site, and the agency's shared app (installed from the wheel in wheels/).
    "home", "clientcore",
    # Wagtail, and what its admin needs.
    "wagtail.contrib.redirects", "wagtail.contrib.sitemaps", "wagtail.embeds", "wagtail.sites",
    "wagtail.users", "wagtail.snippets", "wagtail.documents", "wagtail.images", "wagtail.search",
    "wagtail.admin", "wagtail", "modelcluster", "taggit", "django_filters",
    # Django.
    "django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sessions",
    "django.contrib.messages", "django.contrib.staticfiles", "django.contrib.sitemaps",
]

# Order matters: security first, Wagtail's redirects last (they only answer what would be a 404).
MIDDLEWARE = (
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "wagtail.contrib.redirects.middleware.RedirectMiddleware",
)

# Templates come from each app's templates/ directory (base.html is in home/).
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": (
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ),
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": f"django.contrib.auth.password_validation.{name}"}
    for name in ("UserAttributeSimilarityValidator", "MinimumLengthValidator", "CommonPasswordValidator", "NumericPasswordValidator")
]

LANGUAGE_CODE = "en-gb"
TIME_ZONE = "Europe/London"
USE_I18N = True
USE_TZ = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

STATIC_URL = "/static/"
MEDIA_URL = "/media/"
STATIC_ROOT = BASE_DIR / "staticfiles"
MEDIA_ROOT = BASE_DIR / "media"

# Uploads larger than this go to a temporary file rather than memory; Wagtail caps images separately.
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 20 * 1024 * 1024
# Wagtail's page editor can post many fields for a page with long StreamFields.
DATA_UPLOAD_MAX_NUMBER_FIELDS = 10_000

# --- Wagtail ---------------------------------------------------------------------------------------
WAGTAIL_SITE_NAME = "Studio"
WAGTAILADMIN_BASE_URL = "http://localhost:8000"
WAGTAILSEARCH_BACKENDS = {"default": {"BACKEND": "wagtail.search.backends.database"}}
WAGTAILDOCS_EXTENSIONS = ["pdf", "docx", "xlsx", "csv", "txt"]

# Images are accepted by what they contain, not by their name: the form base sniffs every upload with
# libmagic (home/uploads.py) before Wagtail opens it, and the extensions below must agree with the type.
WAGTAILIMAGES_IMAGE_FORM_BASE = "home.uploads.SniffedImageForm"
WAGTAILIMAGES_EXTENSIONS = ["png", "jpg", "jpeg", "gif", "webp"]
WAGTAILIMAGES_MAX_UPLOAD_SIZE = 15 * 1024 * 1024

# --- Celery (studio/workers/celery.py reads every CELERY_* setting) ---------------------------------
CELERY_BROKER_URL = "redis://127.0.0.1:6379/1"
CELERY_RESULT_BACKEND = "redis://127.0.0.1:6379/2"
CELERY_RESULT_EXPIRES = 3600
CELERY_TASK_TIME_LIMIT = 300
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = TIME_ZONE

# --- the agency footer (clientcore) -------------------------------------------------------------------
CLIENTCORE_AGENCY_NAME = "Harbour Digital"
CLIENTCORE_AGENCY_URL = "https://harbour.example.net/"
