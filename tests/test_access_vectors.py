"""ZeroClick's stateful wire vectors, run through the access path's own code (:class:`Access`, built by a Gate).

The signature cases, the entitlement parse cases and the write cases of the dispatcher all go
through :meth:`Access.handle` with a ``memory://`` ledger, at the vectors' clock: what the vendor's
SDK answers, the access path answers, and a write that is refused leaves the ledger as it was.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from zeroclick_sellers.stateful import sign_access_request

from zc_middleware import Gate, ZeroClickSettings
from zc_middleware.access import Access, epoch
from zc_middleware.ledger.memory import MemoryLedger

DOCUMENT = json.loads((Path(__file__).parent / "vectors" / "stateful-vectors.json").read_text(encoding="utf-8"))
NOW = DOCUMENT["nowSeconds"]
#: settings refuse an empty secret: its kid is simply not configured (the vectors' answer: unknown_kid)
SECRETS = {kid: secret for kid, secret in DOCUMENT["secrets"].items() if secret}
PLANS = {"pro": {"includes": {"api-requests": {"limit": 10, "reset": "month"}}}}
PATH = "/zeroclick/access"


def _names(section: str) -> list[str]:
    return [case["name"] for case in DOCUMENT[section]]


def access_for(access_path: str = PATH) -> Access:
    settings = ZeroClickSettings(
        meters={"api-requests": {}},
        plans=PLANS,
        ledger="memory://",
        signing_secrets=SECRETS,
        signature_tolerance=DOCUMENT["maxSkewSeconds"],
        access_path=access_path,
    )
    gate = Gate(settings)
    assert gate.access is not None and gate.access_path == access_path
    gate.access.clock = lambda: NOW
    return gate.access


def answer_of(access: Access, method: str, target: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    lower = {name.lower(): value for name, value in headers.items()}
    deny = access.handle(method, target, body, lower.get)
    assert ("cache-control", "no-store") in deny.headers
    assert not any(name.startswith("x-zeroclick") for name, _ in deny.headers)
    return deny.status, json.loads(deny.body)


def test_the_vector_file_is_whole() -> None:
    assert len(DOCUMENT["signatureCases"]) >= 25
    assert len(DOCUMENT["entitlementCases"]) >= 30
    assert len([c for c in DOCUMENT["dispatchCases"] if c["name"].startswith("write_")]) >= 15


@pytest.mark.parametrize("case", DOCUMENT["signatureCases"], ids=_names("signatureCases"))
def test_signature_vector(case: dict[str, Any]) -> None:
    access = access_for()
    headers = {"zc-signature": case["signatureHeader"]}
    if case["requestId"] is not None:
        headers["zc-request-id"] = case["requestId"]
    if case["agentId"] is not None:
        headers["zc-agent-id"] = case["agentId"]
    status, body = answer_of(access, case["method"], case["pathAndQuery"], case["body"].encode(), headers)
    if case["requestId"] is None or case["agentId"] is None:
        # the SDK's verifier signs a missing id as empty; its dispatcher (and this path) refuses it first
        assert (status, body) == (401, {"error": "missing_or_malformed_signature"})
    elif case["purpose"] != "access.write":
        assert (status, body) == (401, {"error": "invalid_signature"})  # another purpose is no write
    elif case["expect"] != "ok":
        assert (status, body) == (401, {"error": case["expect"]})
    elif case["body"]:
        assert (status, body) == (200, {"lifecycle": "active"})
        assert len(access.ledger.history(case["agentId"])) == 1
    else:
        assert (status, body) == (400, {"error": "invalid_entitlement"})  # signed, but no write in it
    if status != 200:
        assert access.ledger.history(case["agentId"] or "zcagent_vector") == ()


def signed_write(body: dict[str, Any] | Any) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    fields = body if isinstance(body, dict) else {}
    agent = fields.get("agentId") if isinstance(fields.get("agentId"), str) and fields.get("agentId") else "agent-x"
    headers = {"zc-request-id": "zcreq_vector", "zc-agent-id": agent}
    for key, header in (("buyerId", "zc-buyer-id"), ("buyerEmail", "zc-buyer-email")):
        if isinstance(fields.get(key), str):
            headers[header] = fields[key]
    kid, secret = next(iter(SECRETS.items()))
    headers["zc-signature"] = sign_access_request(
        secret=secret,
        kid=kid,
        method="POST",
        path_and_query=PATH,
        body=raw,
        request_id=headers["zc-request-id"],
        agent_id=agent,
        purpose="access.write",
        timestamp=NOW,
    )
    return raw, headers


@pytest.mark.parametrize("case", DOCUMENT["entitlementCases"], ids=_names("entitlementCases"))
def test_entitlement_vector(case: dict[str, Any]) -> None:
    access = access_for()
    raw, headers = signed_write(case["body"])
    status, body = answer_of(access, "POST", PATH, raw, headers)
    expect = case["expect"]
    if not expect["ok"]:
        assert (status, body) == (400, {"error": "invalid_entitlement"})
        assert access.ledger.history(headers["zc-agent-id"]) == ()
        return
    assert (status, body) == (200, {"lifecycle": "active"})
    [change] = access.ledger.history(expect["agentId"])
    assert (change.version, change.key, change.kid) == (
        expect["stateVersion"],
        expect["idempotencyKey"],
        "zcsec_vector_1",
    )
    account = access.ledger._account(expect["agentId"])
    assert account is not None and account.plan == expect["planSlug"]
    assert account.status == {"active": "active", "suspended": "capped", "closed": "expired"}[expect["status"]]
    assert account.anchor == epoch(expect["periodStart"])
    assert account.expires_at == (None if expect["periodEnd"] is None else epoch(expect["periodEnd"]))


def test_iso_instants_read_as_the_sdk_reads_them() -> None:
    assert epoch("2026-01-01T00:00:00Z") == epoch("2026-01-01T00:00Z") == 1767225600
    assert epoch("2026-01-01T05:30:00+05:30") == 1767225600
    assert epoch("2026-01-01T00:00:00.123456789Z") == pytest.approx(1767225600.123456)


WRITES = [case for case in DOCUMENT["dispatchCases"] if case["name"].startswith("write_")]


class _Down(MemoryLedger):
    def _apply_entitlement(self, write: Any, now: float) -> Any:
        raise OSError("the store is down")


@pytest.mark.parametrize("case", WRITES, ids=[case["name"] for case in WRITES])
def test_dispatch_write_vector(case: dict[str, Any]) -> None:
    """The SDK's dispatcher cases for writes, answered by the access path as by the SDK (the access
    path always answers ``lifecycle: active``: its cases with another handler result are the
    seller's handler, which the ledger is here)."""
    write = case["write"]
    if write.get("lifecycle", "active") != "active" or write.get("retryAfterSeconds", 0) > 0:
        pytest.skip("a handler result the ledger never gives")
    access = access_for(case["basePath"])
    if write.get("throw"):
        access.ledger = _Down("memory://", plans=PLANS)
    request = case["request"]
    assert urlsplit(request["pathAndQuery"]).path == case["basePath"]
    status, body = answer_of(
        access, request["method"], request["pathAndQuery"], request["body"].encode(), request["headers"]
    )
    expect = case["expect"]
    assert (status, body) == (expect["status"], expect["body"])
    applied = access.ledger.history("zcagent_vector") if not write.get("throw") else ()
    assert len(applied) == (1 if status == 200 else 0)


@pytest.mark.parametrize(
    "case", [c for c in DOCUMENT["dispatchCases"] if c["expect"].get("matched") is False], ids=lambda c: c["name"]
)
def test_unclaimed_paths_are_not_the_access_path(case: dict[str, Any]) -> None:
    """Paths the SDK leaves to the app are not the access path: adapters compare the path exactly."""
    assert urlsplit(case["request"]["pathAndQuery"]).path != case["basePath"]
