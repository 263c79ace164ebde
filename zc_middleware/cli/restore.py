"""``ledger-restore [--new]``: the operator's way back after the SQLite ledger file was deleted or replaced.

While the file at ``settings.ledger`` is not the one its processes opened (or
is missing where one was), every process answers paid requests ``503
ledger_unavailable`` and nothing creates or adopts a file on its own. This
command decides: the file now at the path becomes the ledger (or, with
``--new``, a new empty one), its identity is recorded, and the running
processes reconnect to it on their next paid request, without a restart.
``manage.py zeroclick_ledger_restore`` is its Django twin.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Mapping
from typing import Any

from .._sqlite import sqlite_path
from .._sqlite_identity import inode, read_record
from ..errors import ConfigError
from ..ledger import check_url, open_ledger
from .load import load_settings

__all__ = ["add_arguments", "add_parser", "restore_ledger"]


def restore_ledger(url: str, *, plans: Mapping[str, Any], new: bool = False) -> str:
    """Make the file at ``url``'s path the ledger (``new``: create an empty one there); returns what
    to print. Raises :class:`ConfigError` when there is nothing to restore, or a ledger where ``new``
    would create one."""
    if check_url(url) != "sqlite":
        raise ConfigError("invalid_ledger", f"ledger-restore is for a sqlite:/// ledger, not {url!r}")
    path = os.path.abspath(sqlite_path(url, "ledger"))
    here = inode(path)
    if here is None and not new:
        raise ConfigError(
            "no_ledger",
            f"no ledger at {path}: move the ledger file back there, or give --new to start an empty ledger "
            "(every buyer's usage then starts from zero)",
        )
    if here is not None and new:
        raise ConfigError("ledger_exists", f"{path} exists: run without --new to serve from it")
    record = read_record(path)
    aside = []
    if record is not None and (here is None or here[1] != record.inode):
        # The -wal and -shm beside the path belong to the ledger that was there (SQLite finds them by
        # name): opened with another file they would be read as its pages. Kept, under another name.
        stamp = time.strftime("%Y%m%dT%H%M%S")
        for suffix in ("-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.replace(path + suffix, f"{path}{suffix}.replaced-{stamp}")
                aside.append(f"{path}{suffix}.replaced-{stamp}")
    ledger = open_ledger(url, plans=plans, create=new, adopt=True)
    ledger.close()
    said = "A new, empty ledger is" if new else "The file at the path is"
    kept = f" (set aside: {', '.join(aside)})" if aside else ""
    return (
        f"{said} the ledger now: {path}{kept}. Processes that answered 503 ledger_unavailable serve from it "
        "again on their next paid request."
    )


def _restore(args: argparse.Namespace) -> int:
    settings = load_settings(args.settings)
    print(restore_ledger(settings.ledger, plans=settings.plans, new=args.new))
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--new", action="store_true", help="no file is left at the path: start a new, empty ledger there"
    )


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``ledger-restore`` to an argparse ``subparsers`` object; ``common`` holds the options every command takes."""
    parser = commands.add_parser(
        "ledger-restore",
        parents=[common],
        help="after the SQLite ledger file was deleted or replaced: serve from the file now at its path (or --new)",
    )
    add_arguments(parser)
    parser.set_defaults(func=_restore)
