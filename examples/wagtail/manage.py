#!/usr/bin/env python3
"""Run Django management commands for the studio site (production settings unless told otherwise)."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings.production")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
