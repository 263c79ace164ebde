#!/usr/bin/env python
"""A paid search API on Django.

python manage.py check                      # bad ZEROCLICK settings are reported here
python manage.py runserver                  # or: gunicorn paidapi.wsgi / uvicorn paidapi.asgi:application
python manage.py zeroclick_balance agent-1  # the buyer's usage, per meter
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "paidapi.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
