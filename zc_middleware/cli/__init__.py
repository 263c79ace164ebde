"""The ``zc-middleware`` command: one parser for every subcommand, and ``routes``, the one part that
meets the framework adapters (each imported only for its own kind of app).

    zc-middleware [--settings MODULE:ATTR] balance BUYER
    zc-middleware [--settings MODULE:ATTR] assign BUYER PLAN [--expires ISO8601] [--starts ISO8601]
    zc-middleware [--settings MODULE:ATTR] routes --app MODULE:ATTR
    zc-middleware [--settings MODULE:ATTR] outbox status|flush|retry-dead [--outbox URL]
    zc-middleware [--settings MODULE:ATTR] ledger-restore [--new]
    zc-middleware sandbox [--upstream URL]

``python -m zc_middleware`` is the same command. What a user can fix (a module that does not import,
invalid settings, a ledger that is not there) is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from .. import __version__
from .._text import table
from ..errors import ConfigError, ZcError
from ..gate import Gate
from ..settings import ZeroClickSettings
from . import buyers, outbox, restore
from .load import load_object, load_settings

__all__ = ["build_parser", "main"]

Rows = list[tuple[str, str, str, str]]

_SETTINGS_HELP = (
    "a ZeroClickSettings, or a dict of its fields, imported from the current directory "
    "(default: ZEROCLICK_* environment variables)"
)


class _Framework(NamedTuple):
    """How ``routes`` reads one kind of app."""

    #: the adapter's ``route_rows(app, gate)``: ``(route, methods, name, meters)``
    rows: Callable[[Any, Gate], Rows]
    #: the route-name column's header, in the framework's own word
    name: str
    #: the settings the app was set up with
    settings: Callable[[], ZeroClickSettings]


def _framework(app: object, where: str) -> _Framework:
    # A class is imported with its module, so a framework missing from sys.modules cannot have
    # made ``app``: look there, and never import a framework only to ask.
    applications = sys.modules.get("starlette.applications")
    if applications is not None and isinstance(app, applications.Starlette):  # FastAPI apps are Starlette apps
        from ..starlette import route_rows

        return _Framework(route_rows, "name", lambda: _starlette_settings(app, where))
    flask = sys.modules.get("flask")
    if flask is not None and isinstance(app, flask.Flask):
        from ..flask import route_rows as flask_rows

        return _Framework(flask_rows, "endpoint", lambda: _flask_settings(app, where))
    raise ConfigError(
        "invalid_app",
        f"{where}: a {type(app).__name__}, not a Starlette, FastAPI or Flask app "
        "(for Django: manage.py zeroclick_routes)",
    )


def _starlette_settings(app: Any, where: str) -> ZeroClickSettings:
    """What ``add_middleware(ZeroClickMiddleware, settings=...)`` (or ``gate=``) was given."""
    from ..starlette import ZeroClickMiddleware

    for entry in app.user_middleware:
        cls = getattr(entry, "cls", None)
        if isinstance(cls, type) and issubclass(cls, ZeroClickMiddleware):
            settings, gate = entry.kwargs.get("settings"), entry.kwargs.get("gate")
            if isinstance(settings, ZeroClickSettings):
                return settings
            if isinstance(gate, Gate):
                return gate.settings
            return load_settings(None)  # without either, the middleware reads ZEROCLICK_* variables: as here
    raise ConfigError(
        "not_set_up", f"{where}: no ZeroClickMiddleware in app.user_middleware; add it, or give --settings MODULE:ATTR"
    )


def _flask_settings(app: Any, where: str) -> ZeroClickSettings:
    """What ``ZeroClick(app)`` validated: ``init_app`` keeps it on the gate in ``app.extensions``."""
    gate = getattr(app.extensions.get("zeroclick"), "gate", None)
    if not isinstance(gate, Gate):
        raise ConfigError(
            "not_set_up", f"{where}: ZeroClick is not set up on this app; call ZeroClick(app), or give --settings"
        )
    return gate.settings


def _routes(args: argparse.Namespace) -> int:
    app = load_object(args.app, "--app")
    framework = _framework(app, f"--app {args.app}")
    settings = load_settings(args.settings) if args.settings is not None else framework.settings()
    # Pricing needs no store: a throwaway memory ledger and no API key, so the command itself neither
    # opens the real ledger nor starts delivering usage. (Importing a module that calls ZeroClick(app)
    # at import time still runs that call, as any import of the app does.)
    gate = Gate.pricing_only(settings)
    try:
        rows = framework.rows(app, gate)
    finally:
        gate.close()
    print(table([("route", "methods", framework.name, "meters"), *rows]) if rows else "No metered routes.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zc-middleware",
        description="Operate zc_middleware from a shell: buyers' plans, the metered routes, the usage outbox.",
    )
    parser.add_argument("--version", action="version", version=f"zc-middleware {__version__}")
    parser.add_argument("--settings", metavar="MODULE:ATTR", help=_SETTINGS_HELP)
    # Also accepted after the command name; SUPPRESS keeps a command from resetting one given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--settings", metavar="MODULE:ATTR", default=argparse.SUPPRESS, help=_SETTINGS_HELP)
    commands = parser.add_subparsers(dest="command", required=True)
    buyers.add_parsers(commands, common)
    routes = commands.add_parser(
        "routes", parents=[common], help="list the metered routes of a Starlette, FastAPI or Flask app and their cost"
    )
    routes.add_argument(
        "--app", required=True, metavar="MODULE:ATTR", help="the app, imported from the current directory"
    )
    routes.set_defaults(func=_routes)
    outbox.add_parser(commands, common)
    restore.add_parser(commands, common)

    # The sandbox lives in its own package (and needs Starlette); add it only when it is there.
    if importlib.util.find_spec("zc_middleware.sandbox") is not None:
        try:
            from ..sandbox import add_parser as add_sandbox
        except ImportError as exc:
            message = str(exc)  # e.g. the Starlette install hint
            missing = commands.add_parser("sandbox", help="(unavailable) local ZeroClick stand-in")
            missing.set_defaults(func=lambda args: _unavailable(message))
        else:
            add_sandbox(commands)
    return parser


def _unavailable(message: str) -> int:
    print(f"zc-middleware: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``zc-middleware`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ZcError as exc:
        print(f"zc-middleware: {exc.message}", file=sys.stderr)
        return 2
    return code
