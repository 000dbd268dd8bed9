#!/usr/bin/env bash
# Container entry point (also runs outside a container; the tests do that): build the archives that are missing
# and run TorchServe in the foreground with this repository's config.properties, the inference API bound to
# $VIZ_BIND (0.0.0.0 in a container, so a published port reaches it; management and metrics stay on 127.0.0.1).
#   VIZ_MODELS       models to serve (default: alexnet vgg16 resnet18 shapes motion)
#   VIZ_BIND         address of the inference API (default 0.0.0.0)
#   VIZ_CONFIG       config.properties to start from (default: the repository's)
#   VIZ_ARCHIVE_ARGS extra ./archive.sh arguments, e.g. --random-weights for a smoke run
#   TORCH_HOME       torchvision's weight cache: mount one read-only for air-gapped sites
set -euo pipefail
cd "$(dirname "$0")/.."

bind=${VIZ_BIND:-0.0.0.0}
source_config=${VIZ_CONFIG:-config.properties}
run_dir=${VIZ_RUN_DIR:-$(mktemp -d)}
mkdir -p "$run_dir"
config="$run_dir/config.properties"
sed -E "s#^(inference_address=https?://)[^:/]+#\\1${bind}#" "$source_config" > "$config"

# TorchServe's launcher does not pass SIGTERM on to Java, and as a container's PID 1 it would not even die of it: so
# `docker stop` (SIGTERM) runs `torchserve --stop`, which stops Java and its workers, and the launcher returns.
stop() {
  stopping=1
  .venv/bin/torchserve --stop --foreground >/dev/null 2>&1 || true  # waits (60 s at most) for Java to end
  kill -TERM "$child" 2>/dev/null || true  # still setting up or building archives
}
stopping=""
# shellcheck disable=SC2086  # VIZ_MODELS and VIZ_ARCHIVE_ARGS are word lists
./serve.sh --config "$config" --foreground ${VIZ_ARCHIVE_ARGS:-} ${VIZ_MODELS:-alexnet vgg16 resnet18 shapes motion} &
child=$!
trap stop TERM INT
status=0
wait "$child" || status=$?
if [[ -n "$stopping" ]]; then
  wait "$child" 2>/dev/null || true  # a trapped signal ends the first wait early
  exit 0
fi
exit "$status"
