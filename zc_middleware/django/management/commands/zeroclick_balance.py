"""``manage.py zeroclick_balance BUYER``: the buyer's plan, per-meter usage and plan history, as
``zc-middleware balance``."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand

from ....cli.buyers import add_balance_arguments, balance_report
from ._ledger import project_ledger


class Command(BaseCommand):
    help = (
        "Show a buyer's plan and, per meter: limit, used, remaining, % used, period start and end; "
        "then the entitlement writes that set the plan."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        add_balance_arguments(parser)

    def handle(self, *args: Any, buyer: str, **options: Any) -> None:
        with project_ledger() as ledger:
            self.stdout.write(balance_report(ledger, buyer))
