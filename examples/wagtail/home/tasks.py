"""Celery tasks of the home app (found by the app's autodiscover_tasks)."""

import os
import socket

from celery import shared_task
from wagtail.models import Page


@shared_task
def count_live_pages() -> dict:
    """How many pages are live (a query on the site's database), and which worker process counted them.

    The tree's root (depth 1) is not a page anyone visits, so it is not counted.
    """
    return {
        "live_pages": Page.objects.live().filter(depth__gt=1).count(),
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
    }
