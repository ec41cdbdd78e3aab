"""WSGI entry point for gunicorn: ``studio.wsgi:application``."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings.production")

application = get_wsgi_application()
