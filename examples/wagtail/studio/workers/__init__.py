"""Background work: the Celery app lives in ``studio.workers.celery`` (``celery --app studio.workers.celery worker``)."""

from .celery import app as celery_app

__all__ = ["celery_app"]
