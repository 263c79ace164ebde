"""The ``zc-middleware`` command: one parser for every subcommand.

    zc-middleware outbox status|flush|retry-dead [--outbox URL]
    zc-middleware sandbox [--upstream URL]

``python -m zc_middleware`` is the same command. What a user can fix (a store that is not there)
is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import ZcError
from . import outbox

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zc-middleware", description="Operate zc_middleware's usage reporting.")
    parser.add_argument("--version", action="version", version=f"zc-middleware {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    outbox.add_parser(commands)

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
