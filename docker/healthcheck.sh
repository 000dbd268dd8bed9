#!/usr/bin/env bash
# Docker HEALTHCHECK: the inference API answers and every served model has a READY worker; keeps working after
# TorchServe's keys expire (docker/healthcheck.py says how). Extra arguments go to healthcheck.py.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 docker/healthcheck.py "$@"
