#!/usr/bin/env bash
# Install zc-middleware into .venv and run the demo: paid calls, a 402, the buyer's balance.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[starlette]" uvicorn
exec .venv/bin/python examples/demo.py
