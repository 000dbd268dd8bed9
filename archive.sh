#!/usr/bin/env bash
# Build TorchServe archives: ./archive.sh [--weights FILE | --random-weights] [--out DIR] ARCH...
# Sets up the virtual environment first if it is missing. --help lists every option.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/setup.sh >&2
exec .venv/bin/python scripts/build_archive.py "$@"
