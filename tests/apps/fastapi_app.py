"""The scenario app on FastAPI, with the paid routes in an included ``APIRouter``."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Header, HTTPException, Request, Response
from fastapi.responses import PlainTextResponse, StreamingResponse

from tests.apps.asgi_traps import trap_routes
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
from zc_middleware.starlette import ZeroClickMiddleware

app = FastAPI()
router = APIRouter()


@app.get("/free", response_class=PlainTextResponse)
async def free(zc_agent_id: str | None = Header(default=None)) -> str:
    free_work(zc_agent_id)
    return "free"


@router.get("/search")
@metered("api-requests")
async def search(response: Response, zc_agent_id: str | None = Header(default=None)) -> dict[str, bool]:
    ran(zc_agent_id, "search")
    response.headers.update(OWN_HEADERS)
    return {"ok": True}


@router.post("/render")
@metered("compute-seconds", estimate=30)
def render(zc_agent_id: str | None = Header(default=None)) -> dict[str, bool]:
    ran(zc_agent_id, "render")
    do_work()
    return {"rendered": True}


@router.get("/fail")
@metered("api-requests")
async def fail(zc_agent_id: str | None = Header(default=None)) -> None:
    ran(zc_agent_id, "fail")
    raise RuntimeError("boom")


@router.get("/missing")
@metered("api-requests")
async def missing(zc_agent_id: str | None = Header(default=None)) -> None:
    ran(zc_agent_id, "missing")
    raise HTTPException(status_code=404, detail="not here", headers=OWN_HEADERS)


@router.get("/stream")
@metered("api-requests")
async def stream(zc_agent_id: str | None = Header(default=None)) -> StreamingResponse:
    ran(zc_agent_id, "stream")

    async def body():  # type: ignore[no-untyped-def]
        for chunk in CHUNKS:
            yield chunk

    return StreamingResponse(body(), media_type="text/plain")


@router.post("/echo")
@metered("api-requests")
async def echo_body(request: Request) -> dict[str, object]:
    return echo(request.headers.get("zc-agent-id"), await request.body())


@router.get("/configured", response_class=PlainTextResponse)
async def configured(zc_agent_id: str | None = Header(default=None)) -> str:
    ran(zc_agent_id, "configured")
    return "configured"


@router.get("/a/b", name="ab", response_class=PlainTextResponse)
async def ab(zc_agent_id: str | None = Header(default=None)) -> str:
    ran(zc_agent_id, "ab")
    return "ab"


@router.get("/overuse", response_class=PlainTextResponse)
@metered("cpu-seconds", estimate=5)
def overuse() -> str:
    overuse_work()
    return "overused"


@app.get("/relay", response_class=PlainTextResponse)
async def relay(response: Response) -> str:
    response.headers.update(CONTRACT_HEADERS)
    return "relay"


@router.get("/reasoned", response_class=PlainTextResponse)
@metered("api-requests")
async def reasoned(response: Response) -> str:
    response.headers.update(CONTRACT_HEADERS)
    return "reasoned"


@router.get("/refused")
@metered("api-requests")
async def refused() -> None:
    raise HTTPException(status_code=402, detail="refused", headers=CONTRACT_HEADERS)


@app.get("/runs")
async def runs() -> dict[str, int]:
    return dict(RUNS)


app.include_router(router)
app.router.routes.extend(trap_routes())  # Starlette routes: a hidden mount, a route matching on a header
if not BARE:
    app.add_middleware(ZeroClickMiddleware, settings=settings())
