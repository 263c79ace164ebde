"""``zc-middleware sandbox`` passes every parsed option to ``create_app``, in process (no server starts)."""

from __future__ import annotations

import argparse
import inspect
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

import zc_middleware.sandbox as sandbox
from zc_middleware.sandbox import add_parser, create_app
from zc_middleware.sandbox.command import _APP_OPTIONS


def parse(*argv: str) -> argparse.Namespace:
    root = argparse.ArgumentParser(prog="zc-middleware")
    add_parser(root.add_subparsers())
    return root.parse_args(["sandbox", *argv])


def test_every_create_app_keyword_is_an_option() -> None:
    assert {*_APP_OPTIONS, "default_buyer"} == set(inspect.signature(create_app).parameters)


def test_run_passes_the_parsed_options(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_create_app(**kwargs: Any) -> None:
        seen.update(kwargs)
        raise ValueError("stop before serving")

    monkeypatch.setattr(sandbox, "create_app", fake_create_app)
    args = parse(
        "--upstream", "http://127.0.0.1:8000", "--api-key", "sk_x", "--buyer", "agent-7",
        "--identity-header", "x-buyer", "--fail-rate", "0.25", "--seed", "3", "--hang-seconds", "1.5",
        "--signing-secret", "s3cret", "--signing-kid", "k1",
        "--access-path", "/hooks/zc", "--plan", "pro", "--period-days", "7",
    )  # fmt: skip
    with pytest.raises(SystemExit, match="stop before serving"):
        args.func(args)
    assert seen == {
        "api_key": "sk_x",
        "upstream": "http://127.0.0.1:8000",
        "identity_header": "x-buyer",
        "default_buyer": "agent-7",
        "fail_rate": 0.25,
        "seed": 3,
        "hang_seconds": 1.5,
        "signing_secret": "s3cret",
        "signing_kid": "k1",
        "access_path": "/hooks/zc",
        "plan": "pro",
        "period_days": 7.0,
    }
