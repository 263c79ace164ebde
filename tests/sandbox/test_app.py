"""``create_app`` and the command line, in process."""

from __future__ import annotations

import argparse

import httpx
import pytest

pytest.importorskip("starlette")

import zc_middleware.sandbox as sandbox
from zc_middleware.sandbox import add_parser, create_app


def test_public_api() -> None:
    assert sorted(sandbox.__all__) == ["add_parser", "create_app", "run"]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"api_key": ""}, "api_key"),
        ({"api_key": "sk\nx"}, "api_key"),
        ({"api_key": "k", "upstream": "ftp://x"}, "upstream"),
        ({"api_key": "k", "upstream": "http://x/?q=1"}, "upstream"),
        ({"api_key": "k", "identity_header": "bad header"}, "header name"),
        ({"api_key": "k", "default_buyer": ""}, "default_buyer"),
        ({"api_key": "k", "fail_rate": 2}, "fail_rate"),
    ],
)
def test_bad_configuration_fails_at_creation(kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        create_app(**kwargs)  # type: ignore[arg-type]


def test_without_upstream_only_the_batch_endpoint_and_views_run() -> None:
    import anyio

    async def main() -> None:
        app = create_app(api_key="sk_unit")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as client:
            missing = await client.post("/search", content=b"x")
            assert missing.status_code == 404
            assert missing.json()["error"] == "no_upstream"
            ok = await client.post("/v1/usage/batch", json={"events": []}, headers={"Authorization": "Bearer sk_unit"})
            assert ok.json() == {"accepted": 0, "duplicates": 0}
            assert (await client.get("/__sandbox/usage")).json()["usage"] == []

    anyio.run(main)


def test_add_parser_registers_the_subcommand() -> None:
    root = argparse.ArgumentParser(prog="zc-middleware")
    add_parser(root.add_subparsers(dest="command"))
    args = root.parse_args(["sandbox", "--upstream", "http://127.0.0.1:8000", "--fail-rate", "0.3"])
    assert args.command == "sandbox"
    assert (args.host, args.port, args.api_key, args.buyer) == ("127.0.0.1", 8790, "sk_sandbox", "agent-demo")
    assert (args.upstream, args.fail_rate, args.identity_header) == ("http://127.0.0.1:8000", 0.3, "zc-agent-id")
    assert callable(args.func)
    for bad in (["--port", "0"], ["--fail-rate", "1.5"], ["--upstream", "localhost:8000"], ["--api-key", " "]):
        with pytest.raises(SystemExit):
            root.parse_args(["sandbox", *bad])
