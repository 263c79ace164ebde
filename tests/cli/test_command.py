"""The ``zc-middleware`` command itself: its version, its help, and ``python -m zc_middleware``."""

from __future__ import annotations

from tests.cli.conftest import Run
from zc_middleware import __version__


def test_version(run: Run) -> None:
    for module in (False, True):
        result = run("--version", module=module)
        assert (result.returncode, result.stdout) == (0, f"zc-middleware {__version__}\n")


def test_help_names_every_command(run: Run) -> None:
    result = run("--help", module=True)
    assert result.returncode == 0
    assert result.stdout.startswith("usage: zc-middleware ")
    for command in ("balance", "assign", "routes", "outbox"):
        assert command in result.stdout
