"""Every shape of Django view ``@metered`` must work on, for ``test_django.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import django
from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from tests.apps.common import CHUNKS
from zc_middleware import metered, record_usage

RAN: list[str] = []


@metered("api-requests")
def fn_sync(request: HttpRequest) -> HttpResponse:
    RAN.append("fn_sync")
    return JsonResponse({"ok": True})


@metered("compute-seconds", estimate=10)
async def fn_async(request: HttpRequest) -> HttpResponse:
    RAN.append("fn_async")
    record_usage("compute-seconds", 2)  # on the event loop
    await sync_to_async(record_usage)("compute-seconds", 1)  # in a worker thread
    return JsonResponse({"ok": True})


@method_decorator(metered("api-requests"), name="get")
class PerMethod(View):
    """Only GET (and so HEAD) is paid; POST is free."""

    def get(self, request: HttpRequest) -> HttpResponse:
        RAN.append("per_method_get")
        return HttpResponse("get")

    def post(self, request: HttpRequest) -> HttpResponse:
        RAN.append("per_method_post")
        return HttpResponse("post")


@method_decorator(metered("api-requests", 2), name="dispatch")
class OnDispatch(View):
    def get(self, request: HttpRequest) -> HttpResponse:
        RAN.append("on_dispatch")
        return HttpResponse("dispatch")


@method_decorator(metered("api-requests"), name="dispatch")
class DispatchAndGet(View):
    """Every method costs 1 api-request; GET costs 5 compute-seconds on top: the marks stack."""

    @method_decorator(metered("compute-seconds", 5))
    def get(self, request: HttpRequest) -> HttpResponse:
        RAN.append("dispatch_and_get")
        return HttpResponse("stacked")

    def post(self, request: HttpRequest) -> HttpResponse:
        RAN.append("dispatch_and_post")
        return HttpResponse("post")


# method_decorator keeps an async method async only from Django 5.0; before that, @metered
# (whose guard is async like the function it wraps) goes on the method itself.
_METERED_ASYNC = metered("compute-seconds", estimate=10)


class AsyncView(View):
    @(_METERED_ASYNC if django.VERSION < (5, 0) else method_decorator(_METERED_ASYNC))
    async def get(self, request: HttpRequest) -> HttpResponse:
        RAN.append("async_view")
        record_usage("compute-seconds", 7)
        return HttpResponse("async")


@csrf_exempt
@metered("api-requests")
def stacked(request: HttpRequest) -> HttpResponse:
    RAN.append("stacked")
    return HttpResponse("stacked")


@metered("api-requests")
def own_header(request: HttpRequest) -> HttpResponse:
    return HttpResponse("mine", headers={"X-ZeroClick-Usage": "api-requests=99"})


@metered("api-requests")
def no_store(request: HttpRequest) -> HttpResponse:
    return HttpResponse("fresh", headers={"Cache-Control": "no-store"})


@metered("compute-seconds", estimate=30)
def stream_work(request: HttpRequest) -> StreamingHttpResponse:
    """Records usage while the body is iterated, after the middleware has returned."""

    def body() -> Iterator[bytes]:
        for chunk in CHUNKS:
            record_usage("compute-seconds", 5)
            yield chunk

    async def abody() -> AsyncIterator[bytes]:
        for chunk in CHUNKS:
            record_usage("compute-seconds", 5)
            yield chunk

    return StreamingHttpResponse(abody() if isinstance(request, ASGIRequest) else body())


@metered("api-requests")
def stream_fails(request: HttpRequest) -> StreamingHttpResponse:
    """A body that fails before its first chunk."""

    def body() -> Iterator[bytes]:
        raise RuntimeError("the body failed")
        yield b""  # a generator

    async def abody() -> AsyncIterator[bytes]:
        raise RuntimeError("the body failed")
        yield b""  # a generator

    return StreamingHttpResponse(abody() if isinstance(request, ASGIRequest) else body())


def free(request: HttpRequest) -> HttpResponse:
    return HttpResponse("free")


class HandReportingMiddleware:
    """Below ZeroClickMiddleware: reports usage by hand on every response, as a seller's own code
    might, and lets CDNs cache everything. Dual-mode, so that ZeroClickMiddleware stays async under ASGI."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):  # type: ignore[no-untyped-def]
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self._acall(request)
        return self._by_hand(self.get_response(request))

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        return self._by_hand(await self.get_response(request))

    @staticmethod
    def _by_hand(response: HttpResponse) -> HttpResponse:
        response["X-ZeroClick-Usage"] = "api-requests=5"
        response["X-ZeroClick-Reason"] = "plan_expired"
        response["Cache-Control"] = "public, max-age=300"
        response["CDN-Cache-Control"] = "max-age=600"
        return response


class SyncOnlyMiddleware:
    """Below ZeroClickMiddleware it forces it into sync mode even under ASGI."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response):  # type: ignore[no-untyped-def]
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)  # type: ignore[no-any-return]
