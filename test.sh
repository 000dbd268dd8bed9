#!/usr/bin/env bash
# Set up (the pinned packages plus pytest and ruff) and run every test: core, handler and integration.
# Extra arguments go to pytest, e.g. ./test.sh -m "not integration" or ./test.sh tests/core -x
set -euo pipefail
cd "$(dirname "$0")"
./scripts/setup.sh --dev
exec .venv/bin/python -m pytest "$@"
