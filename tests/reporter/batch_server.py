"""A local stand-in for ZeroClick's batch API, with failure injection (``uvicorn tests.reporter.batch_server:app``).

``POST /v1/usage/batch`` checks the bearer key (``ZC_TEST_API_KEY``), the
1,000-event limit and each event's shape, rejects events whose ``userId``
starts with ``reject-`` (422, with a reason), and stores every delivery per
idempotency key. ``POST /_config`` sets the failure mix: a ``fail`` fraction of
calls answer one of ``modes``: ``503``, ``429`` (with ``Retry-After``), or
``hang`` (the events are stored, then the answer comes after the client gave up:
the realistic duplicate). ``GET /_state`` returns what arrived.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import time
from collections import Counter
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

KEY = os.environ.get("ZC_TEST_API_KEY", "test-key")
_TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
_FIELDS = {"userId": str, "meter": str, "quantity": int, "timestamp": str, "idempotencyKey": str}

config: dict[str, Any] = {"fail": 0.0, "modes": ["503"], "retry_after": "1", "hang": 1.0, "seed": 1}
state: dict[str, Any] = {}
rng = random.Random(1)


def reset() -> None:
    state.clear()
    state.update(keys={}, calls=0, failures=0, sizes=[], statuses=Counter(), inflight=0, max_inflight=0, spans=[])


reset()


def problem(event: Any) -> str | None:
    if not isinstance(event, dict) or set(event) != set(_FIELDS):
        return "event must have exactly userId, meter, quantity, timestamp, idempotencyKey"
    for name, kind in _FIELDS.items():
        if not isinstance(event[name], kind) or isinstance(event[name], bool):
            return f"{name} must be a {kind.__name__}"
    if event["quantity"] < 0:
        return "quantity must be >= 0"
    if not _TS.match(event["timestamp"]):
        return "timestamp must be RFC 3339 UTC"
    if event["userId"].startswith("reject-"):
        return f"unknown user {event['userId']}"
    return None


async def batch(request: Request) -> Response:
    state["calls"] += 1
    if request.headers.get("authorization") != f"Bearer {KEY}":
        state["statuses"][401] += 1
        return JSONResponse({"error": "unauthorized"}, status_code=401)
    try:
        events = (await request.json())["events"]
        assert isinstance(events, list)
    except Exception:
        state["statuses"][400] += 1
        return JSONResponse({"error": "invalid_body", "message": "expected {'events': [...]}"}, status_code=400)
    state["sizes"].append(len(events))
    if len(events) > 1000:
        state["statuses"][413] += 1
        return JSONResponse({"error": "too_many_events", "message": "at most 1000 events"}, status_code=413)
    for event in events:
        why = problem(event)
        if why:
            state["statuses"][422] += 1
            return JSONResponse({"error": "invalid_event", "message": why}, status_code=422)
    mode = None
    if rng.random() < config["fail"]:  # the failure modes take turns, so every one is exercised
        mode = config["modes"][state["failures"] % len(config["modes"])]
        state["failures"] += 1
    if mode == "503":
        state["statuses"][503] += 1
        return JSONResponse({"error": "unavailable"}, status_code=503)
    if mode == "429":
        state["statuses"][429] += 1
        return JSONResponse({"error": "slow down"}, status_code=429, headers={"retry-after": config["retry_after"]})
    started = time.monotonic()
    state["inflight"] += 1
    state["max_inflight"] = max(state["max_inflight"], state["inflight"])
    for event in events:
        state["keys"].setdefault(event["idempotencyKey"], []).append(event)
    if mode == "hang":
        state["statuses"]["hang"] += 1
        await asyncio.sleep(config["hang"])
    state["inflight"] -= 1
    state["spans"].append((started, time.monotonic(), [e["idempotencyKey"] for e in events]))
    state["statuses"][200] += 1
    return JSONResponse({"accepted": len(events)})


async def set_config(request: Request) -> Response:
    global rng
    config.update(await request.json())
    rng = random.Random(config["seed"])
    if config.pop("reset", False):
        reset()
    return JSONResponse(config)


async def get_state(request: Request) -> Response:
    public = {k: v for k, v in state.items() if k != "spans"}
    public["statuses"] = {str(k): v for k, v in state["statuses"].items()}
    return JSONResponse(public)


app = Starlette(
    routes=[
        Route("/v1/usage/batch", batch, methods=["POST"]),
        Route("/_config", set_config, methods=["POST"]),
        Route("/_state", get_state),
    ]
)
