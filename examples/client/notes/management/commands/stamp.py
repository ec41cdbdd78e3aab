"""`manage.py stamp`: say which release directory and which user it runs as, after a pause (the schedule tests use it)."""

import os
import time

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Print the release directory and the user id this runs as, after --seconds; --fail fails on purpose."

    def add_arguments(self, parser):
        parser.add_argument("--seconds", type=float, default=0.0)
        parser.add_argument("--fail", action="store_true")

    def handle(self, *args, seconds: float, fail: bool, **options) -> None:
        time.sleep(seconds)
        if fail:
            raise CommandError("failing on purpose")
        self.stdout.write(f"stamp release={os.path.realpath(os.getcwd())} uid={os.getuid()}")
