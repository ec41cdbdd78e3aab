"""``manage.py celery_roundtrip``: send a task through the broker and wait for a worker's answer.

Prints ``celery roundtrip ok live_pages=<n> worker=<hostname>`` and exits 0, or says what went wrong
and exits non-zero (no worker, broker unreachable, the task failed or took longer than --timeout).
"""

from django.core.management.base import BaseCommand, CommandError

from home.tasks import count_live_pages


class Command(BaseCommand):
    help = "Round-trip one Celery task (home.tasks.count_live_pages) through the broker and a worker."

    def add_arguments(self, parser):
        parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the result (default 60)")

    def handle(self, *args, **options):
        timeout = options["timeout"]
        try:
            pending = count_live_pages.delay()
        except Exception as exc:
            raise CommandError(f"celery roundtrip failed: could not send the task: {type(exc).__name__}: {exc}") from exc
        try:
            result = pending.get(timeout=timeout)
        except Exception as exc:
            raise CommandError(f"celery roundtrip failed: no result for task {pending.id} within {timeout:g}s: "
                               f"{type(exc).__name__}: {exc}") from exc
        self.stdout.write(f"celery roundtrip ok live_pages={result['live_pages']} worker={result['hostname']}")
