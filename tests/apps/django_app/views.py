"""The scenario views: sync and async functions, and a class-based view decorated with ``method_decorator``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.utils.decorators import method_decorator
from django.views import View

from tests.apps.common import CHUNKS, CONTRACT_HEADERS, OWN_HEADERS, RUNS, do_work, echo, free_work, overuse_work, ran
from zc_middleware import metered


def buyer(request: HttpRequest) -> str | None:
    return request.headers.get("zc-agent-id")


@metered("api-requests")
def echo_body(request: HttpRequest) -> HttpResponse:
    return JsonResponse(echo(buyer(request), request.body))


def free(request: HttpRequest) -> HttpResponse:
    free_work(buyer(request))
    return HttpResponse("free", content_type="text/plain")


@metered("api-requests")
async def search(request: HttpRequest) -> HttpResponse:
    ran(buyer(request), "search")
    return JsonResponse({"ok": True}, headers=OWN_HEADERS)


@method_decorator(metered("compute-seconds", estimate=30), name="post")
class Render(View):
    """Sync; only POST, so ``GET /render`` is Django's free 405, as in Starlette."""

    def post(self, request: HttpRequest) -> HttpResponse:
        ran(buyer(request), "render")
        do_work()
        return JsonResponse({"rendered": True})


@metered("api-requests")
def fail(request: HttpRequest) -> HttpResponse:
    ran(buyer(request), "fail")
    raise RuntimeError("boom")


@metered("api-requests")
async def missing(request: HttpRequest) -> HttpResponse:
    ran(buyer(request), "missing")
    return JsonResponse({"error": "not here"}, status=404, headers=OWN_HEADERS)


@metered("api-requests")
def stream(request: HttpRequest) -> HttpResponse:
    ran(buyer(request), "stream")

    def body() -> Iterator[bytes]:
        yield from CHUNKS

    async def abody() -> AsyncIterator[bytes]:
        for chunk in CHUNKS:
            yield chunk

    # Django warns when a server of the other kind has to consume the iterator: give each its own.
    content = abody() if isinstance(request, ASGIRequest) else body()
    return StreamingHttpResponse(content, content_type="text/plain")


def configured(request: HttpRequest) -> HttpResponse:
    ran(buyer(request), "configured")
    return HttpResponse("configured", content_type="text/plain")


async def ab(request: HttpRequest) -> HttpResponse:
    ran(buyer(request), "ab")
    return HttpResponse("ab", content_type="text/plain")


@metered("cpu-seconds", estimate=5)
async def overuse(request: HttpRequest) -> HttpResponse:
    overuse_work()
    return HttpResponse("overused", content_type="text/plain")


async def relay(request: HttpRequest) -> HttpResponse:
    return HttpResponse("relay", content_type="text/plain", headers=CONTRACT_HEADERS)


@metered("api-requests")
def reasoned(request: HttpRequest) -> HttpResponse:
    return HttpResponse("reasoned", content_type="text/plain", headers=CONTRACT_HEADERS)


@metered("api-requests")
async def refused(request: HttpRequest) -> HttpResponse:
    return HttpResponse("refused", status=402, content_type="text/plain", headers=CONTRACT_HEADERS)


def runs(request: HttpRequest) -> HttpResponse:
    return JsonResponse(dict(RUNS))
