"""``python -m zc_middleware.sandbox [--port N] [--upstream URL] ...``: the sandbox without the main CLI."""

from __future__ import annotations

import argparse
import sys

from .command import add_parser


def main(argv: list[str] | None = None) -> int:
    root = argparse.ArgumentParser(prog="python -m zc_middleware")
    parser = add_parser(root.add_subparsers())
    parser.prog = "python -m zc_middleware.sandbox"
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
