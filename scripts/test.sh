#!/usr/bin/env bash
# Install zc-middleware with every test dependency into .venv, lint, type-check, and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]" ruff "mypy>=1.13,<3"
.venv/bin/ruff check zc_middleware tests examples benchmarks
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
