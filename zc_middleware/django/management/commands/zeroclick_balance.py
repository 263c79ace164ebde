"""``manage.py zeroclick_balance BUYER``: the buyer's plan and per-meter usage as a table."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand

from ...conf import get_gate


class Command(BaseCommand):
    help = "Show a buyer's plan and, per meter: limit, used, remaining, % used, period start and end."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("buyer", help="the buyer id (the value of the identity header)")

    def handle(self, *args: Any, buyer: str, **options: Any) -> None:
        self.stdout.write(get_gate().ledger.balance(buyer).as_table())
