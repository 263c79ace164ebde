"""``manage.py zeroclick_assign BUYER PLAN [--expires ISO8601] [--starts ISO8601]``: put a buyer on a plan.

Arguments and output are ``zc-middleware assign``'s; the ledger is the project's (``ZEROCLICK["LEDGER"]``).
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ....cli.buyers import add_assign_arguments, assign
from ....errors import ZcError
from ._ledger import project_ledger


class Command(BaseCommand):
    help = "Put BUYER on PLAN with fresh allowances, periods starting now (or at --starts)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        add_assign_arguments(parser, plans="ZEROCLICK['PLANS']")

    def handle(self, *args: Any, buyer: str, plan: str, **options: Any) -> None:
        starts, expires = options["starts"], options["expires"]
        with project_ledger() as ledger:
            try:
                self.stdout.write(assign(ledger, buyer, plan, starts=starts, expires=expires))
            except ZcError as exc:
                raise CommandError(exc.message) from None
