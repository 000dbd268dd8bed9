#!/usr/bin/env bash
# The Docker deployment end to end on this machine's engine, then cleaned up:
#  1. build both images (scripts/docker_build.sh: base image, pip's CA bundle as a build secret, torch index);
#  2. build archives on the host (AlexNet with random weights, the trained shapes model) into a temporary store;
#  3. run the CPU image with that store mounted read-only and the port published on 127.0.0.1 only; wait until
#     Docker reports it healthy; check it runs as a user and refuses calls without a key; from the host, ask both
#     models with the inference key; stop it (docker stop) and check it stopped cleanly;
#  4. the GPU image: torch, torchvision and TorchServe import in it (no GPU needed for that);
#  5. Compose: `docker-compose config` validates both files; docker-compose.cpu.yml comes up, turns healthy,
#     answers, and goes down.
#   scripts/docker_e2e.sh [--no-build] [--no-compose] [--rmi]
# --no-build uses the images as they are; --rmi removes the two images at the end (the base image stays).
# Needs a running Docker engine (e.g. apt-get install docker.io; dockerd &) and, for step 5, docker-compose.
set -euo pipefail
cd "$(dirname "$0")/.."

build=1 compose=1 rmi=""
for arg in "$@"; do
  case "$arg" in
    --no-build) build="" ;;
    --no-compose) compose="" ;;
    --rmi) rmi=1 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "docker_e2e: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done
docker=${DOCKER:-docker}
say() { echo "docker_e2e: $*" >&2; }
fail() { say "FAILED: $*"; exit 1; }
if ! "$docker" info >/dev/null 2>&1; then
  fail "no Docker engine reachable ($docker info failed)"
fi
if [[ -n "$compose" ]] && ! command -v docker-compose >/dev/null 2>&1; then
  fail "docker-compose not found (apt-get install docker-compose, or run with --no-compose)"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/viz-e2e.XXXXXX")
name=cnn-viz-e2e-$$
project=cnnvize2e$$
cleanup() {
  "$docker" rm -f "$name" >/dev/null 2>&1 || true
  if [[ -n "$compose" ]]; then
    VIZ_MODEL_STORE="$work/model_store" docker-compose -f docker-compose.cpu.yml -p "$project" down \
      >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
  if [[ -n "$rmi" ]]; then
    "$docker" rmi cnn-viz-serve:cpu cnn-viz-serve:gpu >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Wait until container $1 is healthy; prints the seconds it took. Fails when it stops or after 300 s.
wait_healthy() {
  local cid=$1 start=$SECONDS state
  while true; do
    state=$("$docker" inspect -f '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' "$cid")
    case "$state" in
      "running healthy") echo $((SECONDS - start)); return 0 ;;
      "running "*) ;;
      *) "$docker" logs --tail 40 "$cid" >&2 || true; fail "container $cid is $state" ;;
    esac
    if ((SECONDS - start > 300)); then
      "$docker" inspect -f '{{json .State.Health}}' "$cid" >&2
      fail "container $cid not healthy after 300 s"
    fi
    sleep 2
  done
}

# Token-authenticated requests from the host to the inference API published on 127.0.0.1:$2 of container $1.
ask() {
  local cid=$1 port=$2 url="http://127.0.0.1:$2" key code
  code=$(curl -s -o /dev/null -w '%{http_code}' "$url/ping")
  [[ "$code" == 400 ]] || fail "/ping without a key answered $code, not 400: token authorization is off?"
  key=$("$docker" exec "$cid" python3 -c \
    "import json; print(json.load(open('/app/key_file.json'))['inference']['key'])")
  curl -fsS -H "Authorization: Bearer $key" "$url/ping" >"$work/ping.json" || fail "/ping with the key failed"
  curl -fsS -H "Authorization: Bearer $key" -H "Content-Type: image/jpeg" --data-binary @docs/grace_hopper.jpg \
    "$url/predictions/alexnet_viz" >"$work/alexnet.json" || fail "alexnet_viz did not answer"
  curl -fsS -H "Authorization: Bearer $key" -F data=@docs/shapes_gradcam.png -F mode=gradcam -F format=png \
    -o "$work/gradcam.png" "$url/predictions/shapes_viz" || fail "shapes_viz did not answer"
  python3 - "$work" <<'EOF' || fail "unexpected answers"
import json, sys
from pathlib import Path
work = Path(sys.argv[1])
assert json.loads((work / "ping.json").read_text())["status"] == "Healthy"
alexnet = json.loads((work / "alexnet.json").read_text())
top = alexnet["predictions"] if "predictions" in alexnet else alexnet
png = (work / "gradcam.png").read_bytes()
assert png.startswith(b"\x89PNG"), png[:40]
print(f"docker_e2e:   alexnet_viz answered {str(top)[:100]}...", file=sys.stderr)
print(f"docker_e2e:   shapes_viz answered a Grad-CAM PNG of {len(png)} bytes", file=sys.stderr)
EOF
}

if [[ -n "$build" ]]; then
  say "building the images (BuildKit's output: $work/build.log while this runs)"
  if ! scripts/docker_build.sh cpu gpu >"$work/build.log" 2>&1; then
    tail -40 "$work/build.log" >&2
    fail "scripts/docker_build.sh failed"
  fi
  grep -E '^(docker_build|setup|#[0-9]+ [0-9.]+ setup):' "$work/build.log" | sed 's/^/docker_e2e:   /' >&2 || true
fi
for kind in cpu gpu; do
  "$docker" image inspect "cnn-viz-serve:$kind" >/dev/null 2>&1 || fail "no image cnn-viz-serve:$kind (build it)"
  say "cnn-viz-serve:$kind: $("$docker" image inspect -f '{{.Size}}' "cnn-viz-serve:$kind" \
    | awk '{printf "%.2f GB", $1/1e9}'), user $("$docker" image inspect -f '{{.Config.User}}' "cnn-viz-serve:$kind")"
done

say "archives: alexnet (random weights) and shapes, into $work/model_store"
./archive.sh --random-weights --out "$work/model_store" alexnet >/dev/null
./archive.sh --out "$work/model_store" shapes >/dev/null
chmod -R a+rX "$work"  # the container's user (uid 1000) reads them

port=$(free_port)
say "docker run cnn-viz-serve:cpu on 127.0.0.1:$port"
"$docker" run -d --name "$name" -p "127.0.0.1:$port:8080" -v "$work/model_store:/app/model_store:ro" \
  -e VIZ_MODELS="alexnet shapes" --health-interval 5s cnn-viz-serve:cpu >/dev/null
took=$(wait_healthy "$name")
say "healthy after $took s: $("$docker" exec "$name" docker/healthcheck.sh)"
uids=$("$docker" top "$name" -eo pid,uid | awk 'NR > 1 {print $2}' | sort -u | tr '\n' ' ')
[[ "$uids" == "1000 " ]] || fail "processes in the container run as uids $uids, not only 1000"
published=$("$docker" port "$name" | tr '\n' ' ')
[[ "$published" == "8080/tcp -> 127.0.0.1:$port " ]] || fail "published: $published"
say "every process runs as uid 1000; published only $published"
ask "$name" "$port"
start=$SECONDS
"$docker" stop -t 30 "$name" >/dev/null
code=$("$docker" inspect -f '{{.State.ExitCode}}' "$name")
[[ "$code" == 0 ]] || fail "the container exited with $code after docker stop"
say "docker stop took $((SECONDS - start)) s, exit code 0"
"$docker" rm "$name" >/dev/null

say "GPU image: $("$docker" run --rm --entrypoint .venv/bin/python cnn-viz-serve:gpu -c \
  'import torch, torchvision, ts; print("torch", torch.__version__, "CUDA", torch.version.cuda, "GPU here:", torch.cuda.is_available())')"

if [[ -n "$compose" ]]; then
  docker-compose -f docker-compose.yml config -q || fail "docker-compose.yml does not validate"
  docker-compose -f docker-compose.cpu.yml config -q || fail "docker-compose.cpu.yml does not validate"
  say "docker-compose config: both files valid"
  port=$(free_port)
  export VIZ_PORT=$port VIZ_MODEL_STORE="$work/model_store" VIZ_MODELS="alexnet shapes" VIZ_HEALTH_INTERVAL=5s
  docker-compose -f docker-compose.cpu.yml -p "$project" up -d 2>&1 | sed 's/^/docker_e2e:   /' >&2
  cid=$(docker-compose -f docker-compose.cpu.yml -p "$project" ps -q viz-cpu)
  took=$(wait_healthy "$cid")
  say "compose service viz-cpu healthy after $took s on 127.0.0.1:$port"
  ask "$cid" "$port"
  docker-compose -f docker-compose.cpu.yml -p "$project" down 2>&1 | sed 's/^/docker_e2e:   /' >&2
fi
say "passed"
