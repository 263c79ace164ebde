"""The project's ledger for a command: the one ``ZEROCLICK["LEDGER"]`` names, opened only if it exists.

As ``zc-middleware balance|assign`` do: a command run from another directory (a relative
``sqlite:///zeroclick.db``) or with a mistyped path says there is no ledger there, instead of
creating an empty one and reporting a buyer without usage.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from django.core.management.base import CommandError

from ....cli.stores import existing_ledger
from ....errors import ZcError
from ....ledger import Ledger
from ...conf import zeroclick_settings


@contextlib.contextmanager
def project_ledger() -> Iterator[Ledger]:
    settings = zeroclick_settings()
    try:
        ledger = existing_ledger(settings.ledger, plans=settings.plans)
    except ZcError as exc:
        raise CommandError(exc.message) from None
    try:
        yield ledger
    finally:
        ledger.close()
