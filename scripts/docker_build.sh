#!/usr/bin/env bash
# Build the Docker images with BuildKit: cnn-viz-serve:cpu (docker/Dockerfile.cpu) and cnn-viz-serve:gpu
# (docker/Dockerfile.gpu).
#   scripts/docker_build.sh [cpu] [gpu] [-- EXTRA DOCKER BUILD ARGUMENTS]     (default: both; MODELS= unless given)
# Environment:
#   BASE_IMAGE     the Debian bookworm base (default debian:bookworm-slim). When it is neither present nor pullable,
#                  scripts/make_debian_base.sh makes cnn-viz-base:bookworm from Debian's packages and that is used.
#   PIP_CERT_FILE  CA bundle handed to pip inside the build as a BuildKit secret (never stored in the image);
#                  default: pip's configured cert (`pip config get global.cert`, or $PIP_CERT), if any.
#   PIP_CONF_FILE  a pip.conf handed in the same way (a private index or mirror); none by default.
#   TORCH_INDEX    the CPU image's torch index (default PyTorch's CPU index); probed first, and left empty (the
#                  pinned registry torch) when it cannot be reached, which the build says.
#   BUILD_NETWORK  the build's network (default host: pip and apt reach what this machine reaches)
#   DOCKER         the docker client; one that can use BuildKit is looked for (buildx, or a client older than 23)
set -euo pipefail
cd "$(dirname "$0")/.."

kinds=() extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    cpu|gpu) kinds+=("$1") ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "docker_build: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ ${#kinds[@]} -gt 0 ]] || kinds=(cpu gpu)

# A client that builds with BuildKit: one with the buildx plugin, or one older than 23 (BuildKit built in, switched
# on by DOCKER_BUILDKIT=1). A newer client without buildx would fall back to the legacy builder, which has no secrets.
buildkit_client() {
  local cand major
  for cand in ${DOCKER:-} $(type -ap docker); do
    if "$cand" buildx version >/dev/null 2>&1; then echo "$cand"; return 0; fi
    major=$("$cand" version -f '{{.Client.Version}}' 2>/dev/null | cut -d. -f1) || continue
    if [[ "$major" =~ ^[0-9]+$ && "$major" -lt 23 ]]; then echo "$cand"; return 0; fi
  done
  return 1
}
if ! docker=$(buildkit_client); then
  echo "docker_build: no docker client here can build with BuildKit: install the buildx plugin (docker-buildx)" >&2
  exit 1
fi
export DOCKER_BUILDKIT=1
if ! "$docker" info >/dev/null 2>&1; then
  echo "docker_build: no Docker engine reachable ($docker info failed): start dockerd" >&2
  exit 1
fi

base=${BASE_IMAGE:-debian:bookworm-slim}
if ! "$docker" image inspect "$base" >/dev/null 2>&1; then
  if timeout 120 "$docker" pull "$base" >/dev/null 2>&1; then
    echo "docker_build: pulled $base" >&2
  else
    echo "docker_build: cannot pull $base; using a Debian bookworm base made from Debian's packages instead" >&2
    base=cnn-viz-base:bookworm
    "$docker" image inspect "$base" >/dev/null 2>&1 || DOCKER="$docker" scripts/make_debian_base.sh "$base"
  fi
fi

cert=${PIP_CERT_FILE:-${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || true)}}
secrets=()
if [[ -n "$cert" ]]; then
  [[ -f "$cert" ]] || { echo "docker_build: CA bundle $cert not found" >&2; exit 1; }
  secrets+=(--secret "id=pip_cert,src=$cert")
fi
if [[ -n "${PIP_CONF_FILE:-}" ]]; then
  secrets+=(--secret "id=pip_conf,src=$PIP_CONF_FILE")
fi

# Is PyTorch's CPU index reachable? If not, build the CPU image with the pinned torch: then it shares every layer
# with the GPU image (the same wheels) instead of installing them twice.
torch_index=${TORCH_INDEX-https://download.pytorch.org/whl/cpu}
if [[ -n "$torch_index" ]] && ! python3 - "$torch_index" "$cert" <<'EOF'
import ssl, sys, urllib.request
url, cert = sys.argv[1].rstrip("/") + "/torch/", sys.argv[2]
try:
    urllib.request.urlopen(url, timeout=15, context=ssl.create_default_context(cafile=cert or None)).close()
except Exception as e:
    sys.exit(f"docker_build: {url}: {e}")
EOF
then
  echo "docker_build: PyTorch's CPU index is unreachable from here: the CPU image gets the pinned torch (CUDA build)" >&2
  torch_index=""
fi

for kind in "${kinds[@]}"; do
  args=(--network "${BUILD_NETWORK:-host}" --build-arg "BASE_IMAGE=$base" --build-arg MODELS=)
  [[ "$kind" == cpu ]] && args+=(--build-arg "TORCH_INDEX=$torch_index")
  echo "docker_build: building cnn-viz-serve:$kind from $base" >&2
  start=$SECONDS
  "$docker" build "${args[@]}" ${secrets[@]+"${secrets[@]}"} ${extra[@]+"${extra[@]}"} \
    -f "docker/Dockerfile.$kind" -t "cnn-viz-serve:$kind" .
  size=$("$docker" image inspect -f '{{.Size}}' "cnn-viz-serve:$kind" | awk '{printf "%.2f GB", $1/1e9}')
  echo "docker_build: cnn-viz-serve:$kind built in $((SECONDS - start)) s ($size)" >&2
done
