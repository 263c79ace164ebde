"""What a user can fix is one line on stderr, exit status 2, and nothing created on the way."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.conftest import Run

NO_OUTBOX = "no outbox at {project}/missing.db (sqlite:///missing.db)"

CASES = {
    "outbox status on a missing outbox": (["outbox", "status", "--outbox", "sqlite:///missing.db"], NO_OUTBOX),
    "outbox flush on a missing outbox": (["outbox", "flush", "--outbox", "sqlite:///missing.db"], NO_OUTBOX),
    "outbox retry-dead on a missing outbox": (["outbox", "retry-dead", "--outbox", "sqlite:///missing.db"], NO_OUTBOX),
    "a memory outbox": (
        ["outbox", "status", "--outbox", "memory://"],
        "memory:// lives inside one process; the command needs a sqlite:/// outbox",
    ),
}


def files(project: Path) -> set[str]:
    return {path.name for path in project.iterdir()} - {"__pycache__"}


@pytest.mark.parametrize("args, message", list(CASES.values()), ids=list(CASES))
def test_one_line_and_status_2(run: Run, project: Path, args: list[str], message: str) -> None:
    before = files(project)
    result = run(*args)
    assert (result.returncode, result.stderr) == (2, f"zc-middleware: {message.replace('{project}', str(project))}\n")
    assert result.stdout == ""
    assert files(project) == before  # above all, no missing.db


def test_python_m_says_the_same(run: Run, project: Path) -> None:
    result = run("outbox", "status", module=True)  # the default outbox: ./zeroclick.db, not there
    assert result.returncode == 2
    assert result.stderr == f"zc-middleware: no outbox at {project}/zeroclick.db (sqlite:///zeroclick.db)\n"
    assert not (project / "zeroclick.db").exists()
