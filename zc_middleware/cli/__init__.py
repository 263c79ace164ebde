"""The ``zc-middleware`` command: one parser for every subcommand.

    zc-middleware [--settings MODULE:ATTR] balance BUYER
    zc-middleware [--settings MODULE:ATTR] assign BUYER PLAN [--expires ISO8601] [--starts ISO8601]
    zc-middleware [--settings MODULE:ATTR] outbox status|flush|retry-dead [--outbox URL]
    zc-middleware sandbox [--upstream URL]

``python -m zc_middleware`` is the same command. What a user can fix (a module that does not import,
invalid settings, a ledger that is not there) is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import ZcError
from . import buyers, outbox

__all__ = ["build_parser", "main"]

_SETTINGS_HELP = (
    "a ZeroClickSettings, or a dict of its fields, imported from the current directory "
    "(default: ZEROCLICK_* environment variables)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zc-middleware",
        description="Operate zc_middleware from a shell: buyers' plans and the usage outbox.",
    )
    parser.add_argument("--version", action="version", version=f"zc-middleware {__version__}")
    parser.add_argument("--settings", metavar="MODULE:ATTR", help=_SETTINGS_HELP)
    # Also accepted after the command name; SUPPRESS keeps a command from resetting one given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--settings", metavar="MODULE:ATTR", default=argparse.SUPPRESS, help=_SETTINGS_HELP)
    commands = parser.add_subparsers(dest="command", required=True)
    buyers.add_parsers(commands, common)
    outbox.add_parser(commands, common)

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
