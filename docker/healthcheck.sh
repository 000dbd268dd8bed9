#!/usr/bin/env bash
# Docker HEALTHCHECK: /ping with the inference key (token authorization stays on, so /ping needs it too).
set -euo pipefail
cd "$(dirname "$0")/.."
key=$(python3 -c "import json; print(json.load(open('key_file.json'))['inference']['key'])")
port=$(sed -nE 's#^inference_address=https?://[^:]+:([0-9]+).*#\1#p' "${VIZ_RUN_DIR:-/tmp/viz}/config.properties")
exec curl -fsS --max-time 10 -H "Authorization: Bearer $key" "http://127.0.0.1:${port:-8080}/ping"
