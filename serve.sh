#!/usr/bin/env bash
# Set up, build the missing archives and start TorchServe with config.properties, serving every built model.
#   ./serve.sh [--random-weights] [--foreground] [--config FILE] [ARCH...]
#        start (default ARCH: alexnet vgg16 resnet18 shapes motion and every archive already in model_store/, such as
#        those ./archive.sh densenet121 inception_v3 built; FILE: config.properties)
#   ./serve.sh stop                                           stop it
# Logs go to logs/, the access keys to key_file.json (both in this folder).
set -euo pipefail
cd "$(dirname "$0")"

if [[ "${1:-}" == "stop" ]]; then
  exec .venv/bin/torchserve --stop
fi

archive_args=() ts_args=() archs=() config=config.properties
while [[ $# -gt 0 ]]; do
  arg=$1
  shift
  case "$arg" in
    --random-weights) archive_args+=("$arg") ;;
    --foreground) ts_args+=("$arg") ;;
    --config) config=$1; shift ;;
    -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "serve.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
    *) archs+=("$arg") ;;
  esac
done
if [[ ${#archs[@]} -eq 0 ]]; then
  archs=(alexnet vgg16 resnet18 shapes motion)
  for mar in model_store/*_viz.mar; do  # and whatever ./archive.sh built there
    [[ -f "$mar" ]] || continue
    name=$(basename "$mar" _viz.mar)
    [[ " ${archs[*]} " == *" $name "* ]] || archs+=("$name")
  done
fi

# TorchServe allows one server per temporary folder (its pid file is there) and would refuse only after the start
# below had truncated logs/console.log, the running server's log: check first, and say so.
pidfile="${TMPDIR:-${TEMP:-${TMP:-/tmp}}}/.model_server.pid"
pid=$(head -n 1 "$pidfile" 2>/dev/null || true)
if [[ "$pid" =~ ^[0-9]+$ ]]; then
  if [[ -r "/proc/$pid/cmdline" ]]; then
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
  else
    cmdline=$(ps -ww -p "$pid" -o args= 2>/dev/null || true)
  fi
  if [[ "$cmdline" == *org.pytorch.serve.ModelServer* ]]; then
    where=$(readlink "/proc/$pid/cwd" 2>/dev/null || true)
    echo "serve.sh: TorchServe is already running (pid $pid${where:+, started in $where}); ./serve.sh stop first" >&2
    exit 1
  fi
fi

./scripts/setup.sh
store=model_store
mkdir -p "$store"
models=() missing=()
for arch in "${archs[@]}"; do
  mar="$store/${arch}_viz.mar"
  stale=""
  # An archive carries a copy of the handler code: rebuild it when the code (or the example model) changed since.
  [[ -f "$mar" ]] && stale=$(find handlers "examples/$arch" -type f -newer "$mar" -print -quit 2>/dev/null || true)
  if [[ ! -f "$mar" || -n "$stale" ]]; then
    echo "serve.sh: building $mar${stale:+ (code changed since it was built: $stale)}" >&2
    args=(${archive_args[@]+"${archive_args[@]}"})
    # an archive built with random weights is rebuilt with random weights (its spec.json says which it had)
    if [[ -f "$mar" ]] && .venv/bin/python -c 'import json, sys, zipfile
sys.exit(json.loads(zipfile.ZipFile(sys.argv[1]).read("spec.json")).get("weights") != "random")' "$mar" 2>/dev/null; then
      args=(--random-weights)
    fi
    [[ -f "examples/$arch/model.json" ]] && args=()  # a model of our own comes with its trained weights
    if ! ./archive.sh ${args[@]+"${args[@]}"} --out "$store" "$arch"; then
      missing+=("$arch")
      continue
    fi
  fi
  models+=("${arch}_viz.mar")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "serve.sh: no weights for: ${missing[*]} (see the message above for the ways out); serving the others." >&2
  echo "          For a smoke run without pretrained weights: ./serve.sh --random-weights" >&2
fi
if [[ ${#models[@]} -eq 0 ]]; then
  echo "serve.sh: nothing to serve." >&2
  exit 3
fi

start=(.venv/bin/torchserve --start --ncs --ts-config "$config" --model-store "$store" --models "${models[@]}")
if [[ ${#ts_args[@]} -gt 0 ]]; then
  exec "${start[@]}" "${ts_args[@]}"  # --foreground: returns when TorchServe stops
fi
mkdir -p logs
if ! "${start[@]}" >logs/console.log 2>&1; then  # TorchServe's own log lines also go to logs/ts_log.log
  echo "serve.sh: torchserve --start failed; logs/console.log says:" >&2
  tail -n 20 logs/console.log >&2
  exit 1
fi

exec .venv/bin/python scripts/wait_ready.py --config "$config" "${models[@]%.mar}"
