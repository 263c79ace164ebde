"""Run the real ``zc-middleware`` command in a temporary project directory with a SQLite ledger."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from zc_middleware import open_ledger

#: the installed script, next to the interpreter running the tests
SCRIPT = Path(sys.executable).with_name("zc-middleware")

METERS = {"api-requests": {}, "compute-seconds": {}}
PLANS = {
    "starter": {"default": True, "includes": {"api-requests": {"limit": 5, "reset": "month"}}},
    "pro": {
        "includes": {
            "api-requests": {"limit": 500, "reset": "month"},
            "compute-seconds": {"limit": None, "reset": "day"},
        }
    },
}

#: the project's settings module, ``conf``: every shape ``--settings`` may name, good and bad
CONF = f"""
from zc_middleware import ZeroClickSettings

METERS = {METERS!r}
PLANS = {PLANS!r}
settings = ZeroClickSettings(meters=METERS, plans=PLANS, ledger="sqlite:///zc.db")
as_dict = {{"meters": METERS, "plans": PLANS, "ledger": "sqlite:///zc.db"}}
missing_ledger = {{"meters": METERS, "plans": PLANS, "ledger": "sqlite:///missing.db"}}
in_memory = {{"meters": METERS, "plans": PLANS, "ledger": "memory://"}}
invalid = {{"meters": METERS, "plans": {{"starter": {{"includes": {{"api-requests": {{"limit": -1}}}}}}}}}}
not_settings = [1, 2]
"""

Run = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A directory holding ``conf.py`` and the ledger ``zc.db`` it names."""
    (tmp_path / "conf.py").write_text(CONF)
    open_ledger(f"sqlite:///{tmp_path / 'zc.db'}", plans=PLANS).close()
    return tmp_path


@pytest.fixture
def run(project: Path) -> Run:
    """``run(*args, module=False, env=None)``: the command in ``project``, as a user types it there.

    Neither ``ZEROCLICK_*`` variables nor ``PYTHONPATH`` leak in: the project must import because the
    command puts the current directory on ``sys.path``.
    """
    if not SCRIPT.exists():
        pytest.skip(f"{SCRIPT} is not installed (pip install -e .)")
    base = {k: v for k, v in os.environ.items() if not k.startswith("ZEROCLICK_") and k != "PYTHONPATH"}

    def run(*args: str, module: bool = False, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "zc_middleware"] if module else [str(SCRIPT)]
        return subprocess.run(
            [*argv, *args], cwd=project, env={**base, **(env or {})}, capture_output=True, text=True, timeout=60
        )

    return run


def write(project: Path, name: str, source: str) -> None:
    (project / name).write_text(textwrap.dedent(source))
