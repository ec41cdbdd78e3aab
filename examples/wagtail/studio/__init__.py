"""The studio site. Importing the Celery app here binds every @shared_task to it, in the web processes too."""

from .workers import celery_app

__all__ = ["celery_app"]
