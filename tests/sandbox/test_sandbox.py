"""The sandbox as a developer runs it: ``python -m zc_middleware.sandbox`` under uvicorn, in front of real apps."""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port, serve, uvicorn

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

KEY = "sk_test_sandbox"
AUTH = {"Authorization": f"Bearer {KEY}"}


def sandbox(*args: str) -> list[str]:
    return [sys.executable, "-m", "zc_middleware.sandbox", "--port", "{port}", "--log-level", "warning", *args]


def event(key: str, *, user: str = "user-1", meter: str = "compute-seconds", quantity: int = 5) -> dict[str, object]:
    return {
        "userId": user,
        "meter": meter,
        "quantity": quantity,
        "timestamp": "2026-06-12T09:30:00Z",
        "idempotencyKey": key,
    }


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db: Path = tmp_path_factory.mktemp("sandbox") / "x.db"
    with serve(uvicorn("tests.apps.starlette_app:app"), env={"ZEROCLICK_LEDGER": f"sqlite:///{db}"}) as base:
        yield base


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    with serve(uvicorn("tests.sandbox.echo_app:app"), ready_path="/echo") as base:
        yield base


@pytest.fixture(scope="module")
def zc_server(app_url: str) -> Iterator[str]:
    argv = sandbox("--upstream", app_url, "--api-key", KEY, "--buyer", "agent-default")
    with serve(argv, ready_path="/__sandbox/usage") as base:
        yield base


@pytest.fixture(scope="module")
def echo_sandbox(echo_url: str) -> Iterator[str]:
    with serve(sandbox("--upstream", echo_url, "--api-key", KEY), ready_path="/__sandbox/usage") as base:
        yield base


@pytest.fixture
def zc(zc_server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=zc_server, timeout=10) as client:
        client.post("/__sandbox/reset").raise_for_status()
        yield client


@pytest.fixture
def echo(echo_sandbox: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=echo_sandbox, timeout=10) as client:
        client.post("/__sandbox/reset").raise_for_status()
        yield client


def usage_rows(client: httpx.Client) -> dict[tuple[str, str], dict[str, int]]:
    rows = client.get("/__sandbox/usage").json()["usage"]
    return {(r["buyer"], r["meter"]): {k: r[k] for k in ("header", "batch", "total")} for r in rows}


# -- the batch endpoint ------------------------------------------------------------------------
def test_batch_requires_the_api_key(zc: httpx.Client) -> None:
    body = {"events": [event("auth-1")]}
    for headers in (
        {},
        {"Authorization": "Bearer sk_wrong"},
        {"Authorization": KEY},
        {"Authorization": f"Basic {KEY}"},
    ):
        response = zc.post("/v1/usage/batch", json=body, headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"] == "unauthorized"
        assert KEY not in response.text
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert usage_rows(zc) == {}
    assert zc.post("/v1/usage/batch", json=body, headers=AUTH).json() == {"accepted": 1, "duplicates": 0}


def test_invalid_events_are_named_by_index_and_nothing_is_recorded(zc: httpx.Client) -> None:
    events = [
        event("ok-0"),
        {**event("bad-1"), "quantity": True},
        event("ok-2"),
        {**event("bad-3"), "timestamp": "2026-06-12T09:30:00"},
        {k: v for k, v in event("bad-4").items() if k != "userId"},
        {**event("bad-5"), "meter": "Compute Seconds"},
        {**event("bad-6"), "quantity": -1},
        {**event("bad-7"), "quantity": 1.5},
        {**event("bad-8"), "extra": 1},
        event("x" * 256),
        "not an object",
        {**event("bad-11"), "timestamp": "2026-02-30T00:00:00Z"},
    ]
    response = zc.post("/v1/usage/batch", json={"events": events}, headers=AUTH)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_events"
    invalid = {item["index"]: item for item in body["invalid"]}
    assert sorted(invalid) == [1, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    assert invalid[1]["idempotencyKey"] == "bad-1" and "bool" in invalid[1]["reason"]
    assert "RFC 3339" in invalid[3]["reason"]
    assert "missing field(s): userId" in invalid[4]["reason"]
    assert "'compute-seconds'" in invalid[5]["reason"]
    assert "between 0" in invalid[6]["reason"]
    assert "float" in invalid[7]["reason"]
    assert "unknown field(s): extra" in invalid[8]["reason"]
    assert "at most 255" in invalid[9]["reason"]
    assert invalid[10]["idempotencyKey"] is None
    assert "not a real instant" in invalid[11]["reason"]
    assert usage_rows(zc) == {}  # the batch is all or nothing
    assert zc.get("/__sandbox/usage").json()["batch"]["batchesRejected"] == 1


@pytest.mark.parametrize(
    ("body", "code"),
    [(b"{not json", "invalid_json"), (b"[]", "invalid_body"), (b'{"events": {}}', "invalid_body"),
     (b'{"events": [], "extra": 1}', "invalid_body")],
)  # fmt: skip
def test_malformed_bodies_get_a_clear_400(zc: httpx.Client, body: bytes, code: str) -> None:
    response = zc.post("/v1/usage/batch", content=body, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"] == code


def test_more_than_1000_events_are_refused(zc: httpx.Client) -> None:
    events = [event(f"big-{n}", quantity=1) for n in range(1001)]
    response = zc.post("/v1/usage/batch", json={"events": events}, headers=AUTH)
    assert response.status_code == 413
    assert response.json()["error"] == "too_many_events"
    assert response.json()["limit"] == 1000
    assert usage_rows(zc) == {}
    response = zc.post("/v1/usage/batch", json={"events": events[:1000]}, headers=AUTH)
    assert response.json() == {"accepted": 1000, "duplicates": 0}
    assert usage_rows(zc)[("user-1", "compute-seconds")]["batch"] == 1000


def test_dedupe_counts_once_and_flags_differing_payloads(zc: httpx.Client) -> None:
    batch = {"events": [event("job-1", quantity=42), event("job-2", quantity=8), event("job-1", quantity=42)]}
    assert zc.post("/v1/usage/batch", json=batch, headers=AUTH).json() == {"accepted": 2, "duplicates": 1}
    assert zc.post("/v1/usage/batch", json=batch, headers=AUTH).json() == {"accepted": 0, "duplicates": 3}
    changed = {"events": [event("job-2", quantity=9)]}
    assert zc.post("/v1/usage/batch", json=changed, headers=AUTH).json() == {"accepted": 0, "duplicates": 1}

    assert usage_rows(zc) == {("user-1", "compute-seconds"): {"header": 0, "batch": 50, "total": 50}}
    keys = {e["idempotencyKey"]: e for e in zc.get("/__sandbox/events").json()["events"]}
    assert keys["job-1"]["deliveries"] == 4 and keys["job-1"]["payloadDiffered"] is False
    assert keys["job-2"]["deliveries"] == 3 and keys["job-2"]["payloadDiffered"] is True
    assert keys["job-2"]["quantity"] == 8 and keys["job-2"]["lastDifferentPayload"]["quantity"] == 9
    summary = zc.get("/__sandbox/usage").json()
    assert [c["idempotencyKey"] for c in summary["batch"]["conflictingKeys"]] == ["job-2"]
    assert summary["batch"]["redeliveredKeys"] == 2
    assert summary["protocolErrors"]["recent"][0]["kind"] == "idempotency_conflict"
    assert zc.get("/__sandbox/events", params={"key": "job-2"}).json()["deliveries"] == 3


# -- the proxy, in front of the real Starlette scenario app --------------------------------------
def test_proxy_adds_identity_strips_usage_and_records_it(zc: httpx.Client) -> None:
    before = zc.get("/runs").json()
    plain = zc.get("/search")
    named = zc.get("/search", headers={"zc-agent-id": "agent-proxied"})
    rendered = zc.post("/render", headers={"zc-agent-id": "agent-proxied"})
    for response in (plain, named, rendered):
        assert response.status_code == 200
        assert "x-zeroclick-usage" not in response.headers
    runs = zc.get("/runs").json()
    assert runs.get("agent-default:search", 0) == before.get("agent-default:search", 0) + 1
    assert runs.get("agent-proxied:search", 0) == before.get("agent-proxied:search", 0) + 1
    rows = usage_rows(zc)
    assert rows[("agent-default", "api-requests")] == {"header": 1, "batch": 0, "total": 1}
    assert rows[("agent-proxied", "api-requests")]["header"] == 1
    assert rows[("agent-proxied", "compute-seconds")]["header"] == 4
    assert zc.get("/stream", headers={"zc-agent-id": "agent-stream"}).text == "chunk-0\nchunk-1\nchunk-2\n"
    assert usage_rows(zc)[("agent-stream", "api-requests")]["header"] == 1


def test_402_passes_through_with_its_reason(zc: httpx.Client) -> None:
    buyer = {"zc-agent-id": "agent-broke"}
    statuses = [zc.get("/search", headers=buyer).status_code for _ in range(6)]
    assert statuses == [200] * 5 + [402]
    denied = zc.get("/search", headers=buyer)
    assert denied.status_code == 402
    assert denied.headers["x-zeroclick-reason"] == "usage_exhausted"
    assert denied.json()["reason"] == "usage_exhausted"
    proxy = zc.get("/__sandbox/usage").json()["proxy"]
    assert proxy["paymentRequiredByReason"] == {"usage_exhausted": 2}
    assert {(p["buyer"], p["path"], p["reason"]) for p in proxy["paymentRequired"]} == {
        ("agent-broke", "/search", "usage_exhausted")
    }
    assert usage_rows(zc)[("agent-broke", "api-requests")]["header"] == 5  # a 402 bills nothing


def test_usage_table_shows_both_channels(zc: httpx.Client) -> None:
    zc.post("/render", headers={"zc-agent-id": "agent-both"}).raise_for_status()
    batch = {"events": [event("render-job-1", user="agent-both", quantity=40)]}
    zc.post("/v1/usage/batch", json=batch, headers=AUTH).raise_for_status()
    assert usage_rows(zc)[("agent-both", "compute-seconds")] == {"header": 4, "batch": 40, "total": 44}
    table = zc.get("/__sandbox/usage.txt")
    assert table.headers["content-type"].startswith("text/plain")
    lines = table.text.splitlines()
    assert lines[0].split() == ["buyer", "meter", "header", "batch", "total"]
    assert ["agent-both", "compute-seconds", "4", "40", "44"] in [line.split() for line in lines]
    zc.post("/__sandbox/reset").raise_for_status()
    assert "(no usage yet)" in zc.get("/__sandbox/usage.txt").text


# -- the proxy from the inside (an echo upstream) ----------------------------------------------
def test_upstream_sees_identity_and_a_fresh_request_id(echo: httpx.Client) -> None:
    spoofed = {"zc-request-id": "spoofed", "zc-agent-id": "agent-echo"}
    first = echo.get("/echo", headers=spoofed).json()["headers"]
    second = echo.get("/echo").json()["headers"]
    assert first["zc-agent-id"] == ["agent-echo"]
    assert second["zc-agent-id"] == ["agent-demo"]  # the default --buyer
    assert len(first["zc-request-id"]) == 1 and first["zc-request-id"] != ["spoofed"]
    assert first["zc-request-id"] != second["zc-request-id"]
    ids = [r["requestId"] for r in echo.get("/__sandbox/requests").json()["requests"]]
    assert ids == [first["zc-request-id"][0], second["zc-request-id"][0]]


def test_path_query_and_body_go_through_untouched(echo: httpx.Client) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB, streamed both ways
    seen = echo.put("/echo/a%2Fb", params={"q": "x y", "n": "1"}, content=payload).json()
    assert seen["method"] == "PUT"
    assert seen["raw_path"] == "/echo/a%2Fb"
    assert seen["query"] == "q=x+y&n=1"
    assert seen["size"] == len(payload) and seen["sha256"] == hashlib.sha256(payload).hexdigest()

    def chunks() -> Iterator[bytes]:
        yield b"part-1,"
        yield b"part-2"

    seen = echo.post("/echo", content=chunks()).json()  # chunked upload
    assert seen["sha256"] == hashlib.sha256(b"part-1,part-2").hexdigest()


def test_cookies_are_not_shared_between_buyers(echo: httpx.Client) -> None:
    assert echo.get("/echo").headers["set-cookie"].startswith("session=upstream")
    with httpx.Client(base_url=str(echo.base_url), timeout=10) as other:
        assert "cookie" not in other.get("/echo").json()["headers"]


def test_streamed_bodies_arrive_as_they_are_produced(echo: httpx.Client) -> None:
    started = time.monotonic()
    arrivals = []
    with echo.stream("GET", "/drip") as response:
        assert "x-zeroclick-usage" not in response.headers
        for _ in response.iter_raw():
            arrivals.append(time.monotonic() - started)
    assert arrivals[-1] - arrivals[0] > 0.3  # chunks came as produced, not buffered to the end
    assert usage_rows(echo)[("agent-demo", "api-requests")]["header"] == 1


@pytest.mark.parametrize(
    ("usage", "kind"),
    [
        ("api-requests=abc", "malformed_usage_header"),
        ("api-requests=1; compute-seconds=2", "malformed_usage_header"),
        ("Api_Requests=1", "malformed_usage_header"),
        ("api-requests=-1", "malformed_usage_header"),
        ("api-requests=1, api-requests=1", "malformed_usage_header"),
        ("api-requests=99999999999999999999", "malformed_usage_header"),
        ("", "malformed_usage_header"),
    ],
)
def test_malformed_usage_is_a_protocol_error_not_a_crash(echo: httpx.Client, usage: str, kind: str) -> None:
    response = echo.get("/say", params={"usage": usage})
    assert response.status_code == 200 and response.text == "said"
    assert "x-zeroclick-usage" not in response.headers
    errors = echo.get("/__sandbox/usage").json()["protocolErrors"]
    assert errors["count"] == 1 and errors["recent"][0]["kind"] == kind
    assert errors["recent"][0]["value"] == usage
    assert usage_rows(echo) == {}


def test_usage_header_parsing_and_error_responses(echo: httpx.Client) -> None:
    echo.get("/say", params={"usage": "api-requests=1, compute-seconds=4"}).raise_for_status()
    echo.get("/say", params={"usage": ["api-requests=2", "tokens=7"]}).raise_for_status()  # two header lines
    failed = echo.get("/say", params={"usage": "api-requests=1", "status": "500"})
    assert failed.status_code == 500 and "x-zeroclick-usage" not in failed.headers
    assert usage_rows(echo) == {
        ("agent-demo", "api-requests"): {"header": 3, "batch": 0, "total": 3},
        ("agent-demo", "compute-seconds"): {"header": 4, "batch": 0, "total": 4},
        ("agent-demo", "tokens"): {"header": 7, "batch": 0, "total": 7},
    }
    kinds = [e["kind"] for e in echo.get("/__sandbox/usage").json()["protocolErrors"]["recent"]]
    assert kinds == ["usage_on_error_response"]


def test_a_402_without_a_known_reason_is_flagged(echo: httpx.Client) -> None:
    assert echo.get("/say", params={"status": "402"}).status_code == 402
    odd = echo.get("/say", params={"status": "402", "reason": "broke"})
    assert odd.headers["x-zeroclick-reason"] == "broke"
    summary = echo.get("/__sandbox/usage").json()
    assert summary["proxy"]["paymentRequiredByReason"] == {"(none)": 1, "broke": 1}
    assert [e["kind"] for e in summary["protocolErrors"]["recent"]] == ["bad_402_reason"] * 2


def test_reserved_paths_are_never_proxied(echo: httpx.Client) -> None:
    assert echo.get("/v1/usage/batch").status_code == 405
    assert echo.get("/__sandbox/nope").status_code == 404
    assert echo.post("/__sandbox/usage").status_code == 405
    assert echo.get("/__sandbox/requests").json()["requests"] == []


# -- failure injection and a dead upstream ----------------------------------------------------------
def test_fail_rate_injects_503_429_and_hangs_and_a_dead_upstream_is_a_502() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    argv = sandbox("--api-key", KEY, "--upstream", dead, "--fail-rate", "1", "--hang-seconds", "0.3", "--seed", "7")
    with serve(argv, ready_path="/__sandbox/usage") as base, httpx.Client(base_url=base, timeout=10) as client:
        seen: dict[int, int] = {}
        for n in range(30):
            started = time.monotonic()
            response = client.post("/v1/usage/batch", json={"events": [event(f"f-{n}", quantity=1)]}, headers=AUTH)
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            if response.status_code == 429:
                assert response.headers["retry-after"] == "1"
            if response.status_code == 200:  # a hang: recorded, then answered late
                assert time.monotonic() - started >= 0.3
        assert set(seen) == {200, 429, 503}
        summary = client.get("/__sandbox/usage").json()
        assert summary["faults"] == {"503": seen[503], "429": seen[429], "hang": seen[200]}
        assert summary["batch"]["eventsAccepted"] == seen[200]

        gone = client.get("/anything")
        assert gone.status_code == 502 and gone.json()["error"] == "upstream_unreachable"
