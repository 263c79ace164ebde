"""Views: ``@metered`` on a function view, and on a class-based view through ``method_decorator``."""

from __future__ import annotations

import time

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.decorators import method_decorator
from django.views import View

from zc_middleware import metered, record_usage


@metered("api-requests")  # 1 unit, billed only on success
async def search(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"results": [f"result for {request.GET.get('q', '')!r}"]})


# 30 must be covered before the view runs; what it records is billed
@method_decorator(metered("compute-seconds", estimate=30), name="post")
class Render(View):
    def post(self, request: HttpRequest) -> HttpResponse:
        raw = request.GET.get("pages", "1")
        if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= 10):
            return JsonResponse({"error": "pages must be 1 to 10"}, status=400)  # >= 400: the hold is released
        pages = int(raw)
        started = time.monotonic()
        time.sleep(0.01)  # the expensive part
        record_usage("compute-seconds", max(1, round(time.monotonic() - started)) * 2 * pages)
        return JsonResponse({"rendered": pages})


def health(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"ok": True})
