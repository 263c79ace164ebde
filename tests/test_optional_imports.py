"""Adapters imported without their framework fail with an install hint."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(("module", "blocked", "extra"), [("zc_middleware.starlette", "starlette", "starlette")])
def test_adapter_without_its_framework_names_the_extra(module: str, blocked: str, extra: str) -> None:
    code = f"import sys\nsys.modules[{blocked!r}] = None\nimport {module}\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0
    assert f"pip install 'zc-middleware[{extra}]'" in result.stderr
    assert "During handling" not in result.stderr  # raised `from None`


def test_core_imports_no_web_framework() -> None:
    code = (
        "import sys, zc_middleware, zc_middleware.gate\n"
        "bad = [m for m in ('starlette', 'fastapi', 'flask', 'django', 'werkzeug') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
