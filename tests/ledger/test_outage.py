"""A ledger that keeps failing is logged once, with its URL's password hidden, not once per request."""

from __future__ import annotations

import logging

import pytest

from zc_middleware import ConfigError, ZeroClickSettings, metered
from zc_middleware.decision import Deny
from zc_middleware.gate import Gate
from zc_middleware.ledger.outage import shown
from zc_middleware.usage import Usage

PLANS = {"one": {"default": True, "includes": {"api-requests": {"limit": 1, "reset": "month"}}}}


@metered("api-requests")
def view() -> None: ...


def test_every_request_fails_and_one_line_says_so(caplog: pytest.LogCaptureFixture) -> None:
    settings = ZeroClickSettings(meters={"api-requests": {}}, plans=PLANS, ledger="redis://:s3cret@10.0.0.9:6379/0")
    gate = Gate.unavailable(settings, ConfigError("cannot_open_ledger", "no answer"))
    charge = gate.charge_for(view)
    with caplog.at_level(logging.INFO, logger="zc_middleware"):
        answers = [gate.check_buyer("b", lambda name: None, charge, Usage()) for _ in range(20)]
    assert all(isinstance(a, Deny) and a.status == 503 for a in answers)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert "redis://:***@10.0.0.9:6379/0 unavailable" in errors[0] and "s3cret" not in errors[0]
    assert gate.stats["ledger_errors"] == 20


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
        ("postgresql://zc:pw@db/shop", "postgresql://zc:***@db/shop"),
        ("sqlite:///tmp/a.db", "sqlite:///tmp/a.db"),
    ],
)
def test_log_lines_hide_passwords(url: str, expected: str) -> None:
    assert shown(url) == expected
