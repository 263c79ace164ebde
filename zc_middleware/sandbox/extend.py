"""``POST /extend`` and ``POST /suspend``: the sandbox plays ZeroClick's side of a buyer's plan.

An agent that got a ``402`` extends its plan and retries. Here ``/extend``
buys the next period of a plan (the one named in the body, else the buyer's
current one, else ``--plan``) starting now, so the buyer has fresh units at
once; ``/suspend`` reaches the plan's spend cap (same period, ``suspended``).
Either is a signed entitlement write (:mod:`.writes`) sent to the app's access
path, with the buyer's state version bumped, exactly as ZeroClick pushes it;
the sandbox keeps the new state only when the app accepted the write.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import httpx

try:
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
except ImportError:  # pragma: no cover - the package __init__ guards this first
    raise ImportError("zc_middleware.sandbox needs Starlette: pip install 'zc-middleware[starlette]'") from None

from .writes import Status, entitlement, iso, signed_headers

__all__ = ["BuyerPlan", "Extender"]

DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class BuyerPlan:
    """What ZeroClick last told the app about one buyer."""

    plan: str
    version: int
    start: float
    end: float | None
    status: Status

    def as_json(self, buyer: str) -> dict[str, object]:
        end = None if self.end is None else iso(self.end)
        return {
            "buyer": buyer,
            "plan": self.plan,
            "status": self.status,
            "stateVersion": self.version,
            "period": {"start": iso(self.start), "end": end},
        }


def _error(status: int, code: str, detail: str, **extra: object) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail, **extra}, status_code=status)


class Extender:
    """The two endpoints, and every buyer's plan as the sandbox last wrote it (:attr:`plans`)."""

    def __init__(
        self,
        *,
        upstream: str | None,
        client: Callable[[], httpx.AsyncClient] | None,
        access_path: str,
        signing: tuple[str, str] | None,
        identity_header: str,
        default_buyer: str,
        default_plan: str | None,
        period_days: float,
    ) -> None:
        self.target = None if upstream is None else upstream.rstrip("/") + access_path
        self.access_path = access_path
        self.client = client
        self.signing = signing
        self.identity_header = identity_header.lower()
        self.default_buyer = default_buyer
        self.default_plan = default_plan
        self.period = period_days * DAY
        self.plans: dict[str, BuyerPlan] = {}

    def buyer_of(self, request: Request) -> str:
        return (request.headers.get(self.identity_header) or "").strip() or self.default_buyer

    async def extend(self, request: Request) -> Response:
        buyer = self.buyer_of(request)
        named = await _named_plan(request)
        if isinstance(named, Response):
            return named
        current = self.plans.get(buyer)
        plan = named or (current.plan if current else None) or self.default_plan
        if plan is None:
            return _error(400, "plan_required", 'name the plan to extend: {"plan": "pro"} (or start with --plan)')
        start = _now()
        if current is not None and start <= current.start:  # extended twice within a second: still a new period
            start = current.start + 1
        state = BuyerPlan(plan, (current.version if current else 0) + 1, start, start + self.period, "active")
        return await self._write(buyer, state)

    async def suspend(self, request: Request) -> Response:
        """A spend cap: the buyer's current period, ``suspended``, until the next ``/extend``."""
        buyer = self.buyer_of(request)
        current = self.plans.get(buyer)
        if current is None:
            plan = self.default_plan
            if plan is None:
                return _error(409, "no_plan", f"{buyer} has no plan from the sandbox yet: POST /extend first")
            now = _now()
            current = BuyerPlan(plan, 0, now, now + self.period, "active")
        return await self._write(buyer, replace(current, version=current.version + 1, status="suspended"))

    async def _write(self, buyer: str, state: BuyerPlan) -> Response:
        if self.target is None or self.client is None:
            return _error(503, "no_upstream", "start the sandbox with --upstream URL to send plan writes to your app")
        if self.signing is None:
            return _error(
                503,
                "unsigned",
                "plan writes are signed: start the sandbox with --signing-secret (your app's signing_secrets "
                "must map --signing-kid to it)",
            )
        kid, secret = self.signing
        body = entitlement(
            agent=buyer, plan=state.plan, status=state.status, start=state.start, end=state.end, version=state.version
        )
        headers = signed_headers(body, path=self.access_path, agent=buyer, secret=secret, kid=kid)
        try:
            answer = await self.client().post(self.target, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return _error(502, "upstream_unreachable", repr(exc), target=self.target)
        said = _json_or_text(answer)
        if answer.status_code != 200:
            return _error(
                502,
                "seller_refused",
                f"the app answered the plan write {answer.status_code}",
                seller={"status": answer.status_code, "body": said},
                write=state.as_json(buyer),
            )
        self.plans[buyer] = state
        return JSONResponse({**state.as_json(buyer), "seller": said})


async def _named_plan(request: Request) -> str | Response | None:
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return _error(400, "invalid_json", 'the body is optional; when sent, JSON: {"plan": "pro"}')
    plan = data.get("plan") if isinstance(data, dict) else None
    if plan is not None and (not isinstance(plan, str) or not plan):
        return _error(400, "invalid_plan", '"plan" is a plan slug, e.g. {"plan": "pro"}')
    return plan


def _json_or_text(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return response.text


def _now() -> float:
    return float(int(time.time()))
