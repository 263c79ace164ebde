"""``zc-middleware outbox status|flush|retry-dead``: inspect and drive the usage outbox.

``status``      pending events, oldest pending age, dead letters with reasons, and conflicts
                (events refused because their key was already queued for other usage)
``flush``       deliver what is due now (needs the service API key)
``retry-dead``  put dead letters back in the queue

The outbox is ``--outbox URL``, else the one ``--settings`` resolves, else
``ZEROCLICK_OUTBOX``, else the SQLite ledger in ``ZEROCLICK_LEDGER``, else
``sqlite:///zeroclick.db`` (the defaults the middleware uses); it must exist.
The API key comes from those settings or ``ZEROCLICK_API_KEY``, never from the
command line, where other users could see it in the process list.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, NamedTuple

from ..outbox import OutboxStatus
from .load import load_settings
from .stores import existing_outbox

__all__ = ["add_parser"]


class _Target(NamedTuple):
    url: str
    api_key: str
    base_url: str


def _target(args: argparse.Namespace) -> _Target:
    """The outbox, key and API the command works on: ``--settings`` when given, else the environment
    (without requiring the rest of a valid configuration, which these commands do not use)."""
    if args.settings is not None:
        settings = load_settings(args.settings)
        key = settings.api_key.get_secret_value() if settings.api_key is not None else ""
        assert settings.outbox is not None  # resolved by the settings validator
        return _Target(args.outbox or settings.outbox, key, settings.api_base_url)
    url = os.environ.get("ZEROCLICK_OUTBOX")
    if not url:
        ledger = os.environ.get("ZEROCLICK_LEDGER", "sqlite:///zeroclick.db")
        url = ledger if ledger.startswith("sqlite:") else "sqlite:///zeroclick.db"
    key = os.environ.get("ZEROCLICK_API_KEY", "").strip()
    return _Target(args.outbox or url, key, os.environ.get("ZEROCLICK_API_BASE_URL", "https://pay.zeroclick.io"))


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}min"
    return f"{seconds / 3600:.1f}h"


def _report(url: str, status: OutboxStatus, as_json: bool) -> str:
    age = status.oldest_age()
    if as_json:
        return json.dumps(
            {
                "outbox": url,
                "pending": status.pending,
                "oldest_pending_age_s": None if age is None else round(age, 3),
                "sent": status.sent,
                "dead": status.dead,
                "conflicts": status.conflicts,
                "dead_letters": [
                    {"key": d.key, "reason": d.reason, "event": json.loads(d.body)} for d in status.dead_letters
                ],
            },
            indent=2,
        )
    lines = [
        f"outbox       {url}",
        f"pending      {status.pending}",
        f"oldest age   {_age(age)}",
        f"sent (kept)  {status.sent}",
        f"dead         {status.dead}",
        f"conflicts    {status.conflicts}",
    ]
    if status.dead_letters:
        width = max(len(d.key) for d in status.dead_letters)
        lines += ["", "dead letters:", f"  {'key'.ljust(width)}  reason"]
        lines += [f"  {d.key.ljust(width)}  {d.reason}" for d in status.dead_letters]
        if status.dead > len(status.dead_letters):
            lines.append(f"  ... and {status.dead - len(status.dead_letters)} more")
    return "\n".join(lines)


def _status(args: argparse.Namespace) -> int:
    url = _target(args).url
    outbox = existing_outbox(url)
    try:
        print(_report(url, outbox.status(dead_limit=args.limit), args.json))
    finally:
        outbox.close()
    return 0


def _retry_dead(args: argparse.Namespace) -> int:
    outbox = existing_outbox(_target(args).url)
    try:
        count = outbox.retry_dead()
    finally:
        outbox.close()
    print(f"{count} dead letters are pending again; the next flush sends them")
    return 0


def _flush(args: argparse.Namespace) -> int:
    from ..reporter import Reporter

    target = _target(args)
    outbox = existing_outbox(target.url)  # first: with no outbox there is nothing to send
    if not target.api_key:
        outbox.close()
        print("zc-middleware: set ZEROCLICK_API_KEY to the service API key to send usage", file=sys.stderr)
        return 2
    reporter = Reporter(outbox, api_key=target.api_key, base_url=target.base_url, timeout=args.request_timeout)
    started = time.monotonic()
    try:
        done = reporter.flush(args.timeout)
    finally:
        reporter.close(timeout=0)
        status = outbox.status(dead_limit=0)
        outbox.close()
    c = reporter.counters
    print(
        f"sent {c['sent']}, retried {c['retried']}, dead {c['dead']} in {time.monotonic() - started:.1f}s; "
        f"{status.pending} pending, {status.dead} dead letters"
    )
    return 0 if done else 1


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``outbox`` and its actions to an argparse ``subparsers`` object; ``common`` holds the
    options every command takes."""
    outbox: argparse.ArgumentParser = commands.add_parser("outbox", help="inspect and drive the usage outbox")
    actions = outbox.add_subparsers(dest="action", required=True)

    def add(name: str, help: str, func: Any) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=help, parents=[common])
        sub.add_argument("--outbox", help="outbox URL (default: the settings', else $ZEROCLICK_OUTBOX or the ledger)")
        sub.set_defaults(func=func)
        return sub

    status = add("status", "pending events, oldest pending age, dead letters with reasons", _status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--limit", type=int, default=20, help="dead letters to list (default: %(default)s)")
    flush = add("flush", "deliver pending usage now (API key: the settings' or $ZEROCLICK_API_KEY)", _flush)
    flush.add_argument("--timeout", type=float, default=30.0, help="seconds to keep sending (default: %(default)s)")
    flush.add_argument("--request-timeout", type=float, default=10.0, help="seconds per batch call")
    add("retry-dead", "put every dead letter back in the queue", _retry_dead)
