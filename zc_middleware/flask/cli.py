"""``flask zeroclick routes | balance BUYER | assign BUYER PLAN``: the extension's commands."""

from __future__ import annotations

from datetime import datetime

import click
from flask import current_app
from flask.cli import AppGroup

from .._text import moment, table
from ..cli.buyers import assign, balance_report
from ..errors import ZcError
from .state import state_of
from .views import route_rows

__all__ = ["zeroclick_cli"]

zeroclick_cli = AppGroup("zeroclick", help="ZeroClick metering: paid routes, buyers' balances and plans.")


@zeroclick_cli.command("routes")
def routes_command() -> None:
    """List the metered routes and what each costs."""
    try:
        rows = route_rows(current_app, state_of(current_app).gate)
    except ZcError as exc:  # a view metered on a meter settings do not declare
        raise click.ClickException(exc.message) from None
    click.echo(table([("route", "methods", "endpoint", "meters"), *rows]) if rows else "No metered routes.")


@zeroclick_cli.command("balance")
@click.argument("buyer")
def balance_command(buyer: str) -> None:
    """Show BUYER's balance: limit, used, remaining, % used and period, per meter; then the plan history."""
    click.echo(balance_report(state_of(current_app).gate.ledger, buyer))


def _moment_option(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return moment(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


@zeroclick_cli.command("assign")
@click.argument("buyer")
@click.argument("plan")
@click.option("--expires", callback=_moment_option, help="ISO 8601 date-time with offset: the plan stops serving then")
@click.option("--starts", callback=_moment_option, help="ISO 8601 date-time with offset: the plan's periods start then")
def assign_command(buyer: str, plan: str, expires: datetime | None, starts: datetime | None) -> None:
    """Put BUYER on PLAN with fresh allowances, periods starting now (or at --starts)."""
    try:
        click.echo(assign(state_of(current_app).gate.ledger, buyer, plan, starts=starts, expires=expires))
    except ZcError as exc:
        raise click.ClickException(exc.message) from None
