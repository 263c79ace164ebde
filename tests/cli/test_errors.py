"""What a user can fix is one line on stderr, exit status 2, and nothing created on the way."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.conftest import Run, write

#: settings that fail as the module is imported
BROKEN = "from zc_middleware import ZeroClickSettings\nsettings = ZeroClickSettings(meters={})\n"
NO_LEDGER = "no ledger at {project}/missing.db (sqlite:///missing.db)"
NO_OUTBOX = "no outbox at {project}/missing.db (sqlite:///missing.db)"

CASES = {
    "module not importable": (
        ["--settings", "nosuch:settings", "balance", "agent-1"],
        "--settings nosuch:settings: cannot import 'nosuch': No module named 'nosuch'",
    ),
    "attribute missing": (
        ["--settings", "conf:setings", "balance", "agent-1"],
        "--settings conf:setings: module 'conf' has no attribute 'setings' (did you mean 'settings'?)",
    ),
    "no attribute named": (
        ["--settings", "conf", "balance", "agent-1"],
        "--settings 'conf': write module:attr, e.g. myproject.app:app",
    ),
    "attribute of the wrong type": (
        ["--settings", "conf:not_settings", "balance", "agent-1"],
        "--settings conf:not_settings: a list, not ZeroClickSettings or a mapping",
    ),
    "invalid mapping": (
        ["--settings", "conf:invalid", "assign", "agent-1", "starter"],
        "invalid settings from --settings conf:invalid: "
        "plans.starter.includes.api-requests.limit: Input should be greater than or equal to 0",
    ),
    "invalid settings built on import": (
        ["--settings", "broken:settings", "balance", "agent-1"],
        "--settings broken:settings: invalid ZeroClickSettings: "
        "meters: Value error, declare at least one meter, e.g. {'api-requests': {}}",
    ),
    "no settings at all": (
        ["balance", "agent-1"],
        "invalid settings from ZEROCLICK_* variables (no --settings given): ZEROCLICK_METERS: Field required",
    ),
    "balance on a missing ledger": (["--settings", "conf:missing_ledger", "balance", "agent-1"], NO_LEDGER),
    "assign on a missing ledger": (["--settings", "conf:missing_ledger", "assign", "agent-1", "pro"], NO_LEDGER),
    "a memory ledger": (
        ["--settings", "conf:in_memory", "balance", "agent-1"],
        "memory:// lives inside one process; the command needs a sqlite:/// ledger",
    ),
    "outbox status on a missing outbox": (["outbox", "status", "--outbox", "sqlite:///missing.db"], NO_OUTBOX),
    "outbox flush on a missing outbox": (["outbox", "flush", "--outbox", "sqlite:///missing.db"], NO_OUTBOX),
    "outbox retry-dead on a missing outbox": (["outbox", "retry-dead", "--outbox", "sqlite:///missing.db"], NO_OUTBOX),
    "a memory outbox": (
        ["outbox", "status", "--outbox", "memory://"],
        "memory:// lives inside one process; the command needs a sqlite:/// outbox",
    ),
    "the settings' outbox missing": (["--settings", "conf:missing_ledger", "outbox", "status"], NO_OUTBOX),
    "routes of something else": (
        ["routes", "--app", "conf:settings"],
        "--app conf:settings: a ZeroClickSettings, not a Starlette, FastAPI or Flask app "
        "(for Django: manage.py zeroclick_routes)",
    ),
    "routes of an app that does not import": (
        ["routes", "--app", "nosuch:app"],
        "--app nosuch:app: cannot import 'nosuch': No module named 'nosuch'",
    ),
}


def files(project: Path) -> set[str]:
    return {path.name for path in project.iterdir()} - {"__pycache__"}


@pytest.mark.parametrize("args, message", list(CASES.values()), ids=list(CASES))
def test_one_line_and_status_2(run: Run, project: Path, args: list[str], message: str) -> None:
    write(project, "broken.py", BROKEN)
    before = files(project)
    result = run(*args)
    expected = f"zc-middleware: {message.replace('{project}', str(project))}"
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1  # one line
    assert result.stderr == f"{expected}\n" or result.stderr.startswith(f"{expected}; check settings.")
    assert result.stdout == ""
    assert files(project) == before  # above all, no missing.db


def test_python_m_says_the_same(run: Run, project: Path) -> None:
    result = run("outbox", "status", module=True)  # the default outbox: ./zeroclick.db, not there
    assert result.returncode == 2
    assert result.stderr.startswith(f"zc-middleware: no outbox at {project}/zeroclick.db (sqlite:///zeroclick.db); ")
    assert result.stderr.count("\n") == 1
    assert not (project / "zeroclick.db").exists()
