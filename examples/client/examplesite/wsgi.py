"""WSGI entry point: ``gunicorn examplesite.wsgi:application`` from the repository root."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examplesite.settings.production")

application = get_wsgi_application()
