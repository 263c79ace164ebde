"""``manage.py zeroclick_assign BUYER PLAN [--expires ISO8601]``: put a buyer on a plan, fresh allowances."""

from __future__ import annotations

from argparse import ArgumentParser
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ...._text import moment
from ....errors import ZcError
from ...conf import get_gate


def _moment(value: str) -> datetime:
    try:
        return moment(value)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


class Command(BaseCommand):
    help = "Put BUYER on PLAN with fresh allowances, periods starting now (or at --starts)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("buyer", help="the buyer id (the value of the identity header)")
        parser.add_argument("plan", help="a plan declared in ZEROCLICK['PLANS']")
        parser.add_argument("--expires", help="ISO 8601 date-time with offset after which the plan stops serving")
        parser.add_argument("--starts", help="ISO 8601 date-time with offset anchoring the plan's periods")

    def handle(self, *args: Any, buyer: str, plan: str, **options: Any) -> None:
        expires = _moment(options["expires"]) if options.get("expires") else None
        starts = _moment(options["starts"]) if options.get("starts") else None
        ledger = get_gate().ledger
        try:
            ledger.assign_plan(buyer, plan, starts_at=starts, expires_at=expires)
        except ZcError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"Assigned plan {plan} to {buyer}.")
        self.stdout.write(ledger.balance(buyer).as_table())
