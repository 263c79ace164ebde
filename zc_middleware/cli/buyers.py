"""Buyers' plans from a shell: ``balance BUYER`` and ``assign BUYER PLAN``, the arguments and output
this command and ``manage.py zeroclick_balance|zeroclick_assign`` share."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from .._text import moment
from ..ledger import Ledger
from .load import load_settings
from .stores import existing_ledger

__all__ = [
    "add_assign_arguments",
    "add_balance_arguments",
    "add_parsers",
    "assign",
    "balance_report",
    "moment_argument",
]


def moment_argument(value: str) -> datetime:
    """An argparse ``type=`` for ISO 8601 moments that keeps :func:`moment`'s message: argparse
    replaces a plain ``ValueError``'s with "invalid value"."""
    try:
        return moment(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_balance_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("buyer", help="the buyer id (the value of the identity header)")


def add_assign_arguments(parser: argparse.ArgumentParser, *, plans: str) -> None:
    """``BUYER PLAN [--expires ISO8601] [--starts ISO8601]``; ``plans`` says where plans are declared."""
    add_balance_arguments(parser)
    parser.add_argument("plan", help=f"a plan declared in {plans}")
    parser.add_argument(
        "--expires", type=moment_argument, metavar="ISO8601", help="date-time with offset: the plan stops serving then"
    )
    parser.add_argument(
        "--starts", type=moment_argument, metavar="ISO8601", help="date-time with offset: the plan's periods start then"
    )


def assign(ledger: Ledger, buyer: str, plan: str, *, starts: datetime | None, expires: datetime | None) -> str:
    """Put ``buyer`` on ``plan`` with fresh allowances; what to print: a line saying so, then the balance."""
    ledger.assign_plan(buyer, plan, starts_at=starts, expires_at=expires)
    return f"Assigned plan {plan} to {buyer}.\n{ledger.balance(buyer).as_table()}"


def balance_report(ledger: Ledger, buyer: str) -> str:
    """The balance table, then the plan's history: one line per entitlement write ZeroClick applied,
    oldest first, so that a buyer's plan state can be traced to the write that set it."""
    table = ledger.balance(buyer).as_table()
    try:
        changes = ledger.history(buyer)
    except NotImplementedError:
        return f"{table}\n\nplan history: not kept by this ledger"
    if not changes:
        return f"{table}\n\nplan history: no entitlement writes"
    return "\n".join([table, "", "plan history:", *(f"  {change.as_line()}" for change in changes)])


def _ledger(args: argparse.Namespace) -> Ledger:
    settings = load_settings(args.settings)
    return existing_ledger(settings.ledger, plans=settings.plans)


def _balance(args: argparse.Namespace) -> int:
    ledger = _ledger(args)
    try:
        print(balance_report(ledger, args.buyer))
    finally:
        ledger.close()
    return 0


def _assign(args: argparse.Namespace) -> int:
    ledger = _ledger(args)
    try:
        print(assign(ledger, args.buyer, args.plan, starts=args.starts, expires=args.expires))
    finally:
        ledger.close()
    return 0


def add_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``balance`` and ``assign`` to an argparse ``subparsers`` object; ``common`` holds the
    options every command takes."""
    balance_parser = commands.add_parser(
        "balance",
        parents=[common],
        help="a buyer's plan and, per meter: limit, used, remaining, %% used, period; then its plan history",
    )
    add_balance_arguments(balance_parser)
    balance_parser.set_defaults(func=_balance)
    assign_parser = commands.add_parser(
        "assign", parents=[common], help="put a buyer on a plan with fresh allowances, periods starting now or --starts"
    )
    add_assign_arguments(assign_parser, plans="the settings' plans")
    assign_parser.set_defaults(func=_assign)
