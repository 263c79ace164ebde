"""``manage.py zeroclick_ledger_restore [--new]``: after the SQLite ledger file was deleted or replaced
while the app ran, serve from the file now at its path, as ``zc-middleware ledger-restore``."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ....cli.restore import add_arguments, restore_ledger
from ....errors import ZcError
from ...conf import zeroclick_settings


class Command(BaseCommand):
    help = "After the SQLite ledger file was deleted or replaced: serve from the file now at its path (or --new)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        add_arguments(parser)

    def handle(self, *args: Any, new: bool, **options: Any) -> None:
        settings = zeroclick_settings()
        try:
            self.stdout.write(restore_ledger(settings.ledger, plans=settings.plans, new=new))
        except ZcError as exc:
            raise CommandError(exc.message) from None
