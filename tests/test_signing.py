"""The signature verifier: ZeroClick's published vectors, agreement with the vendor's SDK, raw targets."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from zc_middleware import Gate, ZeroClickSettings, open_ledger, signing
from zc_middleware.settings import settings_from_mapping
from zc_middleware.signing import REASONS, Verifier, asgi_target, wsgi_target
from zc_middleware.testing import sign

DOCUMENT = json.loads((Path(__file__).parent / "vectors" / "signing-vectors.json").read_text(encoding="utf-8"))
CASES = DOCUMENT["cases"]


def getter(headers: dict[str, str]) -> Any:
    lower = {name.lower(): value for name, value in headers.items()}
    return lower.get


def test_the_vector_file_is_whole() -> None:
    assert len(CASES) >= 20
    assert {case["expect"] for case in CASES} == {"ok", *REASONS}


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_signing_vector(case: dict[str, Any]) -> None:
    verifier = Verifier(
        DOCUMENT["signingSecrets"], tolerance=case["toleranceSeconds"], clock=lambda: case["nowSeconds"]
    )
    reason = verifier.verify(case["method"], case["pathAndQuery"], case["body"].encode(), getter(case["headers"]))
    assert (reason or "ok") == case["expect"]


def test_sign_makes_what_the_verifier_accepts_and_the_sdk_too() -> None:
    sellers = pytest.importorskip("zeroclick_sellers")
    body = b'{"q": "a b"}'
    headers = sign("post", "/a%2Fb?x=1&x=2", body, {"ZC-Agent-Id": "agent-1"}, secret="s3cret", kid="k1")
    assert Verifier({"k1": "s3cret"}).verify("POST", "/a%2Fb?x=1&x=2", body, headers.get) is None
    assert Verifier({"k1": "s3cret"}).verify("POST", "/a/b?x=1&x=2", body, headers.get) == "invalid_signature"
    request = sellers.ZcRequest(method="POST", path_and_query="/a%2Fb?x=1&x=2", headers=headers, body=body)
    assert sellers.verify_request(request, signing_secrets={"k1": "s3cret"}).ok


# -- agreement with the vendor's verify_request, over generated requests -----------------------
NOW = 1_760_000_000
SECRETS = {"k1": "first-secret", "k2": "rotated-secret"}
latin1 = st.text(st.characters(max_codepoint=0xFF, exclude_characters="\r\n"), max_size=24)
hex64 = st.text("0123456789abcdef", min_size=64, max_size=64)
member = st.one_of(
    st.tuples(st.sampled_from(["t", " t", "t "]), st.integers(NOW - 400, NOW + 400).map(str)),
    st.tuples(st.just("t"), latin1),
    st.tuples(st.sampled_from(["kid", "kid "]), st.sampled_from(["k1", "k2", "k3", "", " k1"])),
    st.tuples(st.just("v1"), st.one_of(hex64, latin1, hex64.map(str.upper))),
    st.tuples(st.sampled_from(["sb", "x", "", "v2"]), latin1),
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, bytes, dict[str, str]]:
    method = draw(st.sampled_from(["GET", "POST", "post", "DELETE"]))
    target = draw(st.sampled_from(["/search", "/a%2Fb?x=1", "/v1/items/a%2Fb%20c?q=a%20b", "/"]))
    body = draw(st.binary(max_size=64))
    headers: dict[str, str] = {}
    if draw(st.booleans()):
        headers["zc-request-id"] = draw(st.one_of(st.just("req-1"), latin1))
    if draw(st.booleans()):
        headers["zc-agent-id"] = draw(st.one_of(st.just("agent-1"), latin1))
    shape = draw(st.integers(0, 3))
    if shape == 0:  # a good signature, possibly then tampered with
        signed = sign(
            method,
            target,
            body,
            {**headers, "zc-request-id": headers.get("zc-request-id") or "req-1"},
            secret=SECRETS[draw(st.sampled_from(sorted(SECRETS)))],
            kid=draw(st.sampled_from(["k1", "k2"])),
            timestamp=draw(st.integers(NOW - 400, NOW + 400)),
        )
        headers = signed if draw(st.booleans()) else {**signed, "zc-agent-id": "someone-else"}
    elif shape == 1:  # members shuffled, repeated, unknown
        members = draw(st.lists(member, max_size=6))
        headers["zc-signature"] = ",".join(f"{key}={value}" for key, value in members)
    elif shape == 2:
        headers["zc-signature"] = draw(latin1)
    return method, target, body, headers


@settings(max_examples=400, deadline=None)
@given(requests())
def test_our_verifier_agrees_with_the_sdk(request: tuple[str, str, bytes, dict[str, str]]) -> None:
    sellers = pytest.importorskip("zeroclick_sellers")
    method, target, body, headers = request
    ours = Verifier(SECRETS, clock=lambda: NOW).verify(method, target, body, getter(headers))
    zc_request = sellers.ZcRequest(method=method, path_and_query=target, headers=headers, body=body)
    theirs = sellers.verify_request(zc_request, signing_secrets=SECRETS, clock=lambda: NOW)
    assert (ours or "ok") == ("ok" if theirs.ok else theirs.reason)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200), st.text(max_size=40), st.binary(max_size=40), st.text(max_size=20))
def test_our_verifier_never_raises(signature: str, target: str, body: bytes, other: str) -> None:
    headers = {"zc-signature": signature, "zc-request-id": other, "zc-agent-id": other}
    assert Verifier(SECRETS).verify(other or "GET", target, body, headers.get) in (None, *REASONS)


# -- the raw target ----------------------------------------------------------------------------
def test_asgi_target_is_raw_path_and_query() -> None:
    scope = {"raw_path": b"/a%2Fb%20c", "path": "/a/b c", "query_string": b"q=a%20b"}
    assert asgi_target(scope) == "/a%2Fb%20c?q=a%20b"
    assert asgi_target({"raw_path": b"/x?dup=1", "query_string": b""}) == "/x"
    # no raw_path: re-encoded from the path, which ASGI servers decode as UTF-8
    assert asgi_target({"path": "/a b/\xe9", "query_string": b""}) == "/a%20b/%C3%A9"


def test_wsgi_target_prefers_the_servers_raw_uri() -> None:
    assert wsgi_target({"RAW_URI": "/a%2Fb?x=1", "PATH_INFO": "/a/b", "QUERY_STRING": "x=1"}) == "/a%2Fb?x=1"
    assert wsgi_target({"REQUEST_URI": "/a%2Fb", "PATH_INFO": "/a/b"}) == "/a%2Fb"
    # neither: the latin-1 bytes PEP 3333 decoded, re-encoded (an encoded separator cannot be told apart)
    environ = {"SCRIPT_NAME": "/app", "PATH_INFO": "/caf\xc3\xa9 x", "QUERY_STRING": "q=1"}
    assert wsgi_target(environ) == "/app/caf%C3%A9%20x?q=1"


# -- settings ----------------------------------------------------------------------------------
def test_django_and_flask_mappings_take_signing_secrets() -> None:
    config = settings_from_mapping({"METERS": {"api-requests": {}}, "SIGNING_SECRETS": {"k1": "x"}}, "ZEROCLICK")
    assert Gate(config, ledger=open_ledger("memory://", plans={})).signatures is not None


def test_without_secrets_start_up_warns_once(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(signing, "_warned", False)
    config = ZeroClickSettings(meters={"api-requests": {}}, ledger="memory://")
    with caplog.at_level(logging.WARNING, logger="zc_middleware"):
        gates = [Gate(config), Gate(config)]
    warnings = [r.getMessage() for r in caplog.records if "signing_secrets" in r.getMessage()]
    assert len(warnings) == 1
    assert "anyone who reaches this app" in warnings[0]
    assert all(gate.signatures is None for gate in gates)


def test_checks_and_commands_do_not_warn_about_serving(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``manage.py check`` and ``zc-middleware routes`` price routes with a Gate that serves nothing."""
    monkeypatch.setattr(signing, "_warned", False)
    config = ZeroClickSettings(meters={"api-requests": {}}, ledger="memory://")
    with caplog.at_level(logging.WARNING, logger="zc_middleware"):
        Gate.pricing_only(config)
        assert not [r for r in caplog.records if "signing_secrets" in r.getMessage()]
        Gate(config)  # the app's own Gate still warns, once
    assert len([r for r in caplog.records if "signing_secrets" in r.getMessage()]) == 1


def test_signing_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZEROCLICK_SIGNING_SECRETS", '{"k1": "first-s3cret", "k2": "second-s3cret"}')
    monkeypatch.setenv("ZEROCLICK_SIGNATURE_TOLERANCE", "60")
    config = ZeroClickSettings(meters={"api-requests": {}})
    revealed = {kid: s.get_secret_value() for kid, s in config.signing_secrets.items()}
    assert revealed == {"k1": "first-s3cret", "k2": "second-s3cret"}
    assert config.signature_tolerance == 60
    assert config.max_signed_body == 1 << 20
    assert "s3cret" not in repr(config)


@pytest.mark.parametrize(
    "values",
    [
        {"signing_secrets": {"k 1,": "x"}},
        {"signing_secrets": {"k1": ""}},
        {"signature_tolerance": 0},
        {"max_signed_body": -1},
        {"max_signed_body": True},
    ],
)
def test_bad_signing_settings_are_refused_naming_the_key(values: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match=next(iter(values))):
        ZeroClickSettings(meters={"api-requests": {}}, **values)
