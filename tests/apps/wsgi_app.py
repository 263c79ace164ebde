"""The scenario app on plain werkzeug (run with ``gunicorn tests.apps.wsgi_app:app``).

The app routes with its own ``Map``; ``ZeroClickWSGI`` matches the same map.
``/stream`` returns a generator the server iterates after the app returned.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from tests.apps.common import (
    BARE,
    CHUNKS,
    CONTRACT_HEADERS,
    OWN_HEADERS,
    RUNS,
    do_work,
    echo,
    free_work,
    overuse_work,
    ran,
    settings,
)
from zc_middleware import metered
from zc_middleware.wsgi import ZeroClickWSGI


def buyer(request: Request) -> str | None:
    return request.headers.get("zc-agent-id")


def as_json(data: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(data), status=status, headers=headers, mimetype="application/json")


def free(request: Request) -> Response:
    free_work(buyer(request))
    return Response("free")


@metered("api-requests")
def search(request: Request) -> Response:
    ran(buyer(request), "search")
    return as_json({"ok": True}, headers=OWN_HEADERS)


@metered("compute-seconds", estimate=30)
def render(request: Request) -> Response:
    ran(buyer(request), "render")
    do_work()
    return as_json({"rendered": True})


@metered("api-requests")
def fail(request: Request) -> Response:
    ran(buyer(request), "fail")
    raise RuntimeError("boom")


@metered("api-requests")
def missing(request: Request) -> Response:
    ran(buyer(request), "missing")
    raise NotFound(response=as_json({"error": "not here"}, 404, OWN_HEADERS))


@metered("api-requests")
def stream(request: Request) -> Response:
    ran(buyer(request), "stream")

    def body() -> Iterator[bytes]:
        yield from CHUNKS

    return Response(body(), mimetype="text/plain")


@metered("api-requests")
def echo_body(request: Request) -> Response:
    return as_json(echo(buyer(request), request.get_data()))


def configured(request: Request) -> Response:
    ran(buyer(request), "configured")
    return Response("configured")


def ab(request: Request) -> Response:
    ran(buyer(request), "ab")
    return Response("ab")


def relay(request: Request) -> Response:
    return Response("relay", headers=CONTRACT_HEADERS)


@metered("api-requests")
def reasoned(request: Request) -> Response:
    return Response("reasoned", headers=CONTRACT_HEADERS)


@metered("api-requests")
def refused(request: Request) -> Response:
    return Response("refused", status=402, headers=CONTRACT_HEADERS)


def runs(request: Request) -> Response:
    return as_json(dict(RUNS))


@metered("cpu-seconds", estimate=5)
def overuse(request: Request) -> Response:
    overuse_work()
    return Response("overused", content_type="text/plain")


url_map = Map(
    [
        Rule("/free", endpoint="free"),
        Rule("/search", endpoint="search", methods=["GET"]),
        Rule("/render", endpoint="render", methods=["POST"]),
        Rule("/fail", endpoint="fail"),
        Rule("/missing", endpoint="missing"),
        Rule("/stream", endpoint="stream"),
        Rule("/configured", endpoint="configured"),
        Rule("/a/b", endpoint="ab"),
        Rule("/echo", endpoint="echo", methods=["POST"]),
        Rule("/runs", endpoint="runs"),
        Rule("/overuse", endpoint="overuse"),
        Rule("/relay", endpoint="relay"),
        Rule("/reasoned", endpoint="reasoned"),
        Rule("/refused", endpoint="refused"),
    ]
)
views: dict[str, Callable[[Request], Response]] = {
    "free": free,
    "search": search,
    "render": render,
    "fail": fail,
    "missing": missing,
    "stream": stream,
    "configured": configured,
    "ab": ab,
    "echo": echo_body,
    "runs": runs,
    "overuse": overuse,
    "relay": relay,
    "reasoned": reasoned,
    "refused": refused,
}


@Request.application  # type: ignore[arg-type]
def dispatch(request: Request) -> Response | HTTPException:
    try:
        endpoint, args = url_map.bind_to_environ(request.environ).match()
        return views[endpoint](request, **args)
    except HTTPException as exc:
        return exc


app = dispatch if BARE else ZeroClickWSGI(dispatch, url_map=url_map, views=views, settings=settings())
