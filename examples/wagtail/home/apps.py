from django.apps import AppConfig


class HomeConfig(AppConfig):
    name = "home"
    verbose_name = "Home page"

    def ready(self):
        # Load the upload check, and python-magic with it, at start: without libmagic the site must not
        # start at all (manage.py and gunicorn fail here), rather than fail at the first upload.
        from . import uploads  # noqa: F401
