"""Per-request cost of zc_middleware in Flask and Django (WSGI), against bare apps in the same run.

Calls each WSGI application in process (no sockets, no server): a fresh environ,
a no-op ``start_response``, the body read to the end and ``close()`` called, as
a WSGI server would. Variants alternate inside each round; best rounds and medians.
The peers are Flask-Limiter and django-ratelimit with a limit never reached.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_requests import PLANS, SIGNED_BODY, SIGNING, SMOKE_HELP, RawDebit, measure  # noqa: E402

from zc_middleware import metered  # noqa: E402
from zc_middleware.environ import environ_key  # noqa: E402
from zc_middleware.testing import sign  # noqa: E402

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
ENVIRON = {
    "REQUEST_METHOD": "GET",
    "SCRIPT_NAME": "",
    "QUERY_STRING": "",
    "SERVER_NAME": "bench",
    "SERVER_PORT": "80",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "REMOTE_ADDR": "127.0.0.1",
    "HTTP_HOST": "bench",
    "HTTP_USER_AGENT": "bench",
    "HTTP_ZC_AGENT_ID": "agent-bench",
    "wsgi.version": (1, 0),
    "wsgi.url_scheme": "http",
    "wsgi.errors": sys.stderr,
    "wsgi.multithread": False,
    "wsgi.multiprocess": False,
    "wsgi.run_once": False,
}


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: object = None) -> Callable[[bytes], None]:
    if not status.startswith("200"):
        raise RuntimeError(f"unexpected status {status}")
    return lambda data: None


def signed_environ(path: str) -> dict[str, Any]:
    """What a ``GET`` of ``path`` carrying :data:`SIGNED_BODY` adds to :data:`ENVIRON`, signed as the
    proxy signs it: the signature headers, and ``RAW_URI`` as gunicorn sets it."""
    (kid, secret), agent = next(iter(SIGNING.items())), {"zc-agent-id": ENVIRON["HTTP_ZC_AGENT_ID"]}
    headers = sign("GET", path, SIGNED_BODY, agent, secret=secret, kid=kid)
    return {
        **{environ_key(name): value for name, value in headers.items()},
        "CONTENT_LENGTH": str(len(SIGNED_BODY)),
        "RAW_URI": path,
    }


def call(app: WSGIApp, path: str, signed: dict[str, Any] | None = None) -> None:
    environ = dict(ENVIRON, PATH_INFO=path)
    if signed is None:
        environ["wsgi.input"] = io.BytesIO(b"")
    else:
        environ.update(signed)
        environ["wsgi.input"] = io.BytesIO(SIGNED_BODY)
    body = app(environ, _start_response)
    try:
        for _ in body:
            pass
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()


def run_wsgi(app: WSGIApp, path: str, n: int, signed: bool = False) -> float:
    extra = signed_environ(path) if signed else None
    for _ in range(50):
        call(app, path, extra)
    start = time.perf_counter()
    for _ in range(n):
        call(app, path, extra)
    return (time.perf_counter() - start) / n * 1e6


def ledger_url(kind: str, tmp: Path) -> str:
    return "memory://" if kind == "memory" else f"sqlite:///{tmp / 'bench.db'}"


# -- Flask --------------------------------------------------------------------------------
def flask_app(kind: str | None, tmp: Path, raw: RawDebit | None = None, *, signed: bool = False) -> WSGIApp:
    from flask import Flask

    app = Flask(f"bench_{kind}")

    @app.get("/free")
    def free() -> str:
        return "hello"

    def paid() -> str:
        if raw is not None:
            raw.once()
        return "hello"

    # metered only where the middleware checks it: a metered view refuses to run unchecked
    app.get("/paid")(paid if kind is None else metered("api-requests")(paid))

    if kind is not None:
        from zc_middleware.flask import ZeroClick

        app.config["ZEROCLICK"] = {"meters": {"api-requests": {}}, "plans": PLANS, "ledger": ledger_url(kind, tmp)}
        if signed:
            app.config["ZEROCLICK"].update(signing_secrets=SIGNING, signature_tolerance=86_400)
        ZeroClick(app)
    return app


def flask_no_op_app(tmp: Path) -> WSGIApp:
    """What any extension that decides before the view and sees the response adds at the least:
    a ``before_request`` hook and a ``wsgi_app`` wrapper that do nothing."""
    app = flask_app(None, tmp)
    app.before_request_funcs.setdefault(None, []).insert(0, lambda: None)
    inner = app.wsgi_app
    app.wsgi_app = lambda environ, start_response: inner(environ, start_response)  # type: ignore[method-assign]
    return app


def flask_wrapper_app(tmp: Path) -> WSGIApp:
    """:func:`flask_no_op_app` whose ``wsgi_app`` wrapper also wraps ``start_response``, as
    ZeroClick wraps a free route's (to drop the contract's headers the app set), doing nothing."""
    app = flask_app(None, tmp)
    app.before_request_funcs.setdefault(None, []).insert(0, lambda: None)
    inner = app.wsgi_app

    def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], exc_info: object = None) -> Any:
            if exc_info is None:
                return start_response(status, headers)
            return start_response(status, headers, exc_info)

        return inner(environ, start)

    app.wsgi_app = wsgi_app  # type: ignore[method-assign]
    return app


def flask_limiter_app() -> WSGIApp:
    from flask import Flask
    from flask_limiter import Limiter
    from flask_limiter.util import get_remote_address

    app = Flask("bench_limiter")
    limiter = Limiter(get_remote_address, app=app, storage_uri="memory://")

    @app.get("/paid")
    @limiter.limit("1000000000/minute")
    def limited() -> str:
        return "hello"

    return app


# -- Django -------------------------------------------------------------------------------
class NoOpMiddleware:
    """The least a Django middleware that decides in ``process_view`` adds: it does nothing."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        return self.get_response(request)

    def process_view(self, request: Any, view_func: object, view_args: object, view_kwargs: object) -> None:
        return None


class NoOpWrapper(NoOpMiddleware):
    """:class:`NoOpMiddleware` that also looks at the response's headers on the way out, as
    ZeroClick looks at a free route's (to drop the contract's headers the app set)."""

    def __call__(self, request: Any) -> Any:
        response = self.get_response(request)
        if "x-zeroclick-usage" in response.headers:
            pass
        return response


class DjangoBench:
    """One configured Django. Every variant gets its own handler, and its requests their own URLconf
    holding just the route they call (``request.urlconf``), so that every variant's resolver does
    the same work: Django tries its patterns in order. The Gate is process-wide (``conf._gate``):
    each ZeroClick variant installs its own before it is timed, once per batch."""

    def __init__(self, tmp: Path, raw: RawDebit) -> None:
        import django
        from django.conf import settings
        from django.http import HttpRequest, HttpResponse
        from django.urls import path

        def free(request: HttpRequest) -> HttpResponse:
            return HttpResponse("hello")

        @metered("api-requests")
        def paid(request: HttpRequest) -> HttpResponse:
            return HttpResponse("hello")

        def with_raw_debit(request: HttpRequest) -> HttpResponse:
            raw.once()
            return HttpResponse("hello")

        views: dict[str, Callable[..., Any]] = {"free": free, "paid": paid, "raw": with_raw_debit}
        try:
            from django_ratelimit.decorators import ratelimit

            views["limited"] = ratelimit(key="ip", rate="1000000000/m")(free)
            self.has_peer = True
        except ImportError:
            self.has_peer = False
        self.urlconfs: dict[str, str] = {}
        for route, view in [("", None), *views.items()]:
            module = type(sys)(f"bench_django_urls{'_' if route else ''}{route}")
            routes = views.items() if not route else [(route, view)]  # the root URLconf has them all
            module.urlpatterns = [path(name, func) for name, func in routes]  # type: ignore[attr-defined]
            sys.modules[module.__name__] = module
            self.urlconfs[route] = module.__name__
        settings.configure(
            DEBUG=False,
            ALLOWED_HOSTS=["*"],
            ROOT_URLCONF=self.urlconfs[""],
            MIDDLEWARE=[],
            INSTALLED_APPS=[],
            DATABASES={},
            ZEROCLICK={"METERS": {"api-requests": {}}, "PLANS": PLANS, "LEDGER": "memory://"},
        )
        django.setup()
        from zc_middleware.django import conf
        from zc_middleware.gate import Gate
        from zc_middleware.settings import ZeroClickSettings

        self._conf = conf
        self.gates = {
            kind: Gate(ZeroClickSettings(meters={"api-requests": {}}, plans=PLANS, ledger=ledger_url(kind, tmp)))
            for kind in ("memory", "sqlite")
        }
        self.gates["memory, signed"] = Gate(
            ZeroClickSettings(
                meters={"api-requests": {}},
                plans=PLANS,
                ledger="memory://",
                signing_secrets=SIGNING,
                signature_tolerance=86_400,
            )
        )

    def handler(self, route: str, middleware: str | None = None) -> WSGIApp:
        """A handler with ``middleware`` (or none) whose requests resolve in ``route``'s own URLconf."""
        from django.core.handlers.wsgi import WSGIHandler, WSGIRequest
        from django.test.utils import override_settings

        with override_settings(MIDDLEWARE=[middleware] if middleware else []):
            handler = WSGIHandler()
        handler.request_class = type("BenchRequest", (WSGIRequest,), {"urlconf": self.urlconfs[route]})
        return handler

    def with_gate(self, kind: str, route: str) -> Variant:
        """ZeroClick on ``route``, with the ``memory://`` or ``sqlite://`` Gate installed before timing."""
        handler = self.handler(route, "zc_middleware.django.ZeroClickMiddleware")
        install = lambda: setattr(self._conf, "_gate", self.gates[kind])  # noqa: E731
        return Variant(handler, f"/{route}", install, signed=kind.endswith("signed"))


# -- running ------------------------------------------------------------------------------
class Variant(NamedTuple):
    """One row: an app, the path it is called on, and what to do before each timed batch."""

    app: WSGIApp
    path: str
    before: Callable[[], object] = lambda: None
    #: requests carry the proxy's signature and a small body (:func:`signed_environ`)
    signed: bool = False


def timers(variants: dict[str, Variant]) -> dict[str, Callable[[int], float]]:
    def timer(variant: Variant) -> Callable[[int], float]:
        def run(n: int) -> float:
            variant.before()
            return run_wsgi(variant.app, variant.path, n, variant.signed)

        return run

    return {name: timer(variant) for name, variant in variants.items()}


def bench_flask(rounds: int, n: int) -> None:
    tmp = Path(tempfile.mkdtemp())
    raw = RawDebit(tmp / "bench.db")  # the ledger opens the same file
    variants = {
        "bare": Variant(flask_app(None, tmp), "/free"),
        "bare-2": Variant(flask_app(None, tmp), "/free"),
        "no-op middleware": Variant(flask_no_op_app(tmp), "/free"),
        "no-op wrapper": Variant(flask_wrapper_app(tmp), "/free"),
        "free route + zc": Variant(flask_app("memory", tmp), "/free"),
        "paid memory://": Variant(flask_app("memory", tmp), "/paid"),
        "paid memory://, signed": Variant(flask_app("memory", tmp, signed=True), "/paid", signed=True),
        "paid sqlite://": Variant(flask_app("sqlite", tmp), "/paid"),
        "bare + raw debit": Variant(flask_app(None, tmp, raw), "/paid"),
    }
    try:
        variants["Flask-Limiter"] = Variant(flask_limiter_app(), "/paid")
    except ImportError:
        print("(Flask-Limiter not installed: pip install -e '.[bench]')")
    measure("Flask", timers(variants), raw, rounds, n)


def bench_django(rounds: int, n: int) -> None:
    tmp = Path(tempfile.mkdtemp())
    raw = RawDebit(tmp / "bench.db")  # the ledgers open the same file
    dj = DjangoBench(tmp, raw)
    variants = {
        "bare": Variant(dj.handler("free"), "/free"),
        "bare-2": Variant(dj.handler("free"), "/free"),
        "no-op middleware": Variant(dj.handler("free", "bench_wsgi.NoOpMiddleware"), "/free"),
        "no-op wrapper": Variant(dj.handler("free", "bench_wsgi.NoOpWrapper"), "/free"),
        "free route + zc": dj.with_gate("memory", "free"),
        "paid memory://": dj.with_gate("memory", "paid"),
        "paid memory://, signed": dj.with_gate("memory, signed", "paid"),
        "paid sqlite://": dj.with_gate("sqlite", "paid"),
        "bare + raw debit": Variant(dj.handler("raw"), "/raw"),
    }
    if dj.has_peer:
        variants["django-ratelimit"] = Variant(dj.handler("limited"), "/limited")
    else:
        print("(django-ratelimit not installed: pip install -e '.[bench]')")
    measure("Django (WSGI)", timers(variants), raw, rounds, n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("-n", type=int, default=300, help="requests per variant per round")
    parser.add_argument("--only", choices=["flask", "django"], help="run one framework")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.n = 2, 20
    if args.only in (None, "flask"):
        bench_flask(args.rounds, args.n)
    if args.only in (None, "django"):
        bench_django(args.rounds, args.n)


if __name__ == "__main__":
    main()
