#!/usr/bin/env bash
# Container entry point (also runs outside a container; the tests do that): build the archives that are missing
# and run TorchServe in the foreground with this repository's config.properties, the inference API bound to
# $VIZ_BIND (0.0.0.0 in a container, so a published port reaches it; management and metrics stay on 127.0.0.1).
#   VIZ_MODELS       models to serve (default: alexnet vgg16 resnet18 shapes)
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

# shellcheck disable=SC2086  # VIZ_MODELS and VIZ_ARCHIVE_ARGS are word lists
exec ./serve.sh --config "$config" --foreground ${VIZ_ARCHIVE_ARGS:-} ${VIZ_MODELS:-alexnet vgg16 resnet18 shapes}
