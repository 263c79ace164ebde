#!/usr/bin/env python
"""``python tests/apps/django_app/manage.py check`` (and the ``zeroclick_*`` commands) for the scenario app."""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository root
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.apps.django_app.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
