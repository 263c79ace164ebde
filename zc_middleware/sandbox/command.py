"""``zc-middleware sandbox``: the argparse subcommand and the uvicorn runner.

Importing this module needs neither Starlette nor uvicorn, so the main CLI can
register the subcommand unconditionally; both are imported when it runs.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
from typing import Any

__all__ = ["add_parser", "run"]

log = logging.getLogger("zc_middleware.sandbox")
_URL = re.compile(r"https?://[^/?#\s]+(/[^?#\s]*)?")  # fullmatch: ``$`` accepts a trailing newline
#: the ``create_app`` keywords that are options of the same name (``--buyer`` is ``default_buyer``);
#: ``tests/sandbox/test_command.py`` keeps this in step with ``create_app``'s signature
_APP_OPTIONS = (
    "api_key",
    "upstream",
    "identity_header",
    "fail_rate",
    "seed",
    "hang_seconds",
    "signing_secret",
    "signing_kid",
    "access_path",
    "plan",
    "period_days",
)


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, got {text}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative number of seconds, got {text}")
    return value


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535)")
    return int(text)


def _url(text: str) -> str:
    if not _URL.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an http:// or https:// URL (e.g. http://127.0.0.1:8000)")
    return text


def _days(text: str) -> float:
    value = _seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of days, got {text}")
    return value


def _path(text: str) -> str:
    if not re.fullmatch(r"/[A-Za-z0-9._~/-]*", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a path such as /zeroclick/access")
    return text


def _non_empty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``sandbox`` to an argparse ``subparsers`` object; sets ``func=run`` and returns the parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "sandbox",
        help="run a local stand-in for ZeroClick (batch endpoint + proxy) for offline development",
        description=(
            "A local stand-in for ZeroClick: POST /v1/usage/batch (auth, validation, 1,000-event limit, dedupe) "
            "and, with --upstream, a proxy in front of your app that adds the buyer header and reads and strips "
            "X-ZeroClick-Usage; POST /extend and POST /suspend send your app signed plan writes (--signing-secret). "
            "Usage per buyer and meter: GET /__sandbox/usage.txt (or /__sandbox/usage as JSON)."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    parser.add_argument("--port", type=_port, default=8790, help="port to listen on (default: %(default)s)")
    parser.add_argument("--upstream", type=_url, metavar="URL", help="your app, e.g. http://127.0.0.1:8000")
    parser.add_argument(
        "--api-key", type=_non_empty, default="sk_sandbox", help="the service API key batches must send"
    )
    parser.add_argument(
        "--buyer",
        type=_non_empty,
        default="agent-demo",
        help="buyer id for requests without one (default: %(default)s)",
    )
    parser.add_argument(
        "--identity-header", default="zc-agent-id", help="header carrying the buyer id (default: %(default)s)"
    )
    parser.add_argument(
        "--signing-secret",
        type=_non_empty,
        metavar="SECRET",
        help="sign what the proxy forwards (zc-signature), as ZeroClick does; the app's signing_secrets must "
        "map --signing-kid to it (default: unsigned)",
    )
    parser.add_argument(
        "--signing-kid", type=_non_empty, default="sandbox", help="the kid signatures name (default: %(default)s)"
    )
    parser.add_argument(
        "--access-path",
        type=_path,
        default="/zeroclick/access",
        help="where your app takes plan writes (its access_path; default: %(default)s)",
    )
    parser.add_argument(
        "--plan",
        type=_non_empty,
        metavar="SLUG",
        help="the plan POST /extend buys for a buyer the sandbox has not written a plan for yet (default: none, "
        'then the request names it: {"plan": "pro"})',
    )
    parser.add_argument(
        "--period-days",
        type=_days,
        default=30.0,
        help="how long a period bought with POST /extend lasts (default: %(default)s)",
    )
    parser.add_argument(
        "--fail-rate", type=_rate, default=0.0, help="share of batch calls that fail: 503, 429 or a hang (default: 0)"
    )
    parser.add_argument(
        "--hang-seconds", type=_seconds, default=10.0, help="how long an injected hang lasts (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the failure RNG (default: %(default)s)")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn and sandbox log level (default: %(default)s)",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Serve the sandbox until interrupted; returns the exit status."""
    try:
        import uvicorn
    except ImportError:
        raise SystemExit("zc-middleware sandbox needs uvicorn: pip install uvicorn") from None
    from . import create_app

    try:
        app = create_app(default_buyer=args.buyer, **{name: getattr(args, name) for name in _APP_OPTIONS})
    except ValueError as exc:
        raise SystemExit(f"zc-middleware sandbox: {exc}") from None
    # A program, not the library: it may give its own logger a handler (and only its own).
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        log.addHandler(handler)
    log.setLevel(args.log_level.upper())
    base = f"http://{args.host}:{args.port}"
    log.info("ZeroClick sandbox on %s", base)
    log.info("  batch endpoint: POST %s/v1/usage/batch (Authorization: Bearer <--api-key>)", base)
    log.info("  proxy: %s", f"{base}/* -> {args.upstream}" if args.upstream else "off (no --upstream)")
    if args.upstream:
        signed = f"signed, kid {args.signing_kid!r}" if args.signing_secret else "unsigned (no --signing-secret)"
        log.info("  proxy requests: %s", signed)
        if args.signing_secret:
            log.info(
                "  plans: POST %s/extend, POST %s/suspend -> %s%s (signed writes)",
                base,
                base,
                args.upstream,
                args.access_path,
            )
    log.info("  usage: %s/__sandbox/usage.txt", base)
    if args.fail_rate:
        log.info("  failing %.0f%% of batch calls (seed %d)", args.fail_rate * 100, args.seed)
    # A short graceful shutdown: an injected hang must not hold the process for hang_seconds.
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=2)
    uvicorn.Server(config).run()
    return 0
