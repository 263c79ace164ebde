"""``zc-middleware balance`` and ``assign`` on a real SQLite ledger, with settings from a module or the environment."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from tests.cli.conftest import METERS, PLANS, Run
from zc_middleware import open_ledger
from zc_middleware.ledger import Entitlement


def spend(project: Path, buyer: str, units: int) -> None:
    ledger = open_ledger(f"sqlite:///{project / 'zc.db'}", plans=PLANS)
    try:
        hold = ledger.reserve(buyer, {"api-requests": units})
        ledger.adjust(hold, {"api-requests": units})  # type: ignore[arg-type]
    finally:
        ledger.close()


def test_assign_then_balance_shows_the_plan_and_the_meters(run: Run, project: Path) -> None:
    assigned = run("--settings", "conf:settings", "assign", "agent-1", "pro", "--expires", "2099-01-31T00:00Z")
    assert assigned.returncode == 0, assigned.stderr
    lines = assigned.stdout.splitlines()
    assert lines[0] == "Assigned plan pro to agent-1."
    assert lines[1] == "buyer agent-1: plan pro (active, expires 2099-01-31 00:00 UTC)"
    assert lines[2].split() == ["meter", "limit", "used", "remaining", "%", "used", "period", "start", "period", "end"]
    assert lines[4].split()[:5] == ["api-requests", "500", "0", "500", "0"]
    assert lines[5].split()[:5] == ["compute-seconds", "unlimited", "0", "-", "-"]

    spend(project, "agent-1", 2)
    shown = run("balance", "agent-1", "--settings", "conf:settings", module=True)  # the option after the command too
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == "buyer agent-1: plan pro (active, expires 2099-01-31 00:00 UTC)"
    assert lines[3].split()[:5] == ["api-requests", "500", "2", "498", "0.4"]
    assert lines[5:] == ["", "plan history: no entitlement writes"]  # a manual assignment is no entitlement write


def test_balance_shows_the_entitlement_writes_under_the_table(run: Run, project: Path) -> None:
    start = datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()
    clock = iter([start + 60, start + 3600])
    ledger = open_ledger(f"sqlite:///{project / 'zc.db'}", plans=PLANS, clock=lambda: next(clock))
    try:
        ledger.apply_entitlement(Entitlement("agent-4", "pro", "active", start, None, 7, "evt-a", "kid-1"))
        ledger.apply_entitlement(Entitlement("agent-4", "pro", "suspended", start, None, 8, "evt-b", "kid-1"))
    finally:
        ledger.close()
    shown = run("--settings", "conf:settings", "balance", "agent-4")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == "buyer agent-4: plan pro (capped)"
    assert lines[-4:] == [
        "",
        "plan history:",
        "  2026-01-01 00:01:00 UTC  v7  kid kid-1  plan pro, active, from 2026-01-01 00:00  (evt-a)",
        "  2026-01-01 01:00:00 UTC  v8  kid kid-1  suspended (spend cap)  (evt-b)",
    ]


def test_a_plan_starting_later_shows_as_not_started(run: Run) -> None:
    result = run("--settings", "conf:as_dict", "assign", "agent-2", "starter", "--starts", "2099-03-01T08:30+02:00")
    assert result.returncode == 0, result.stderr
    assert "buyer agent-2: plan starter (not started)" in result.stdout


def test_without_settings_the_environment_gives_them(run: Run) -> None:
    env = {"ZEROCLICK_METERS": json.dumps(METERS), "ZEROCLICK_PLANS": json.dumps(PLANS)}
    env["ZEROCLICK_LEDGER"] = "sqlite:///zc.db"
    result = run("balance", "agent-3", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("buyer agent-3: plan starter (active)\n")  # the default plan, before any request


def test_assign_refuses_what_the_ledger_would_refuse(run: Run) -> None:
    unknown = run("--settings", "conf:settings", "assign", "agent-1", "gold")
    refused = "zc-middleware: plan 'gold' is not declared in settings.plans; declared: starter, pro\n"
    assert (unknown.returncode, unknown.stderr) == (2, refused)
    day = run("--settings", "conf:settings", "assign", "agent-1", "pro", "--expires", "2099-01-31+02:00")
    assert day.returncode == 2
    assert "'2099-01-31+02:00' names a day, not a moment; write e.g. 2099-01-31T00:00+02:00" in day.stderr
