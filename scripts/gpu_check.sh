#!/usr/bin/env bash
# The one-shot device check (docs/development.md, "The GPU path"): the CUDA lane, then the GPU benchmarks, into one folder.
#
#   scripts/gpu_check.sh [OUT_DIR] [gpu_check.py options]     # OUT_DIR: default $OUT, else bench/results/gpu_check
#
# 1. Python: $PYTHON, else .venv's where it has torch, else python3 (a GPU machine's image holds torch there). Wheels in
#    .whl/ (scripts/gpu_wheels.sh downloads them: Captum, which the image lacks) are installed into a folder of their
#    own first; what is still missing is reported in gpu_check.json (environment.present).
# 2. The CUDA lane: pytest -m gpu tests/device/test_cuda_lane.py (every mode of alexnet, resnet18, shapes and r3d_18
#    on the GPU, maps against the CPU's, an actmax job, two GPUs where there are two), JUnit XML and log kept.
# 3. scripts/gpu_check.py: classify and gradcam latency and throughput, actmax steps per second and the fraction of
#    the bfloat16 peak, 64 AlexNet classes through every_class.py, memory over 100 jobs; gpu_check.json and .md.
# Without CUDA the same steps run as the CPU fallback: the lane's tests skip with their reason, and the
# measurements run on small sizes (plumbing only). No download; about 3 minutes on one GPU, at most 6.5 (each step
# is capped: the lane at 4 minutes, the measurements at 2.5; with TorchServe there, 6.5 more).
# Exit status: 0 when the lane had no failure and every measurement ran.
set -uo pipefail
cd "$(dirname "$0")/.."

out="${OUT:-bench/results/gpu_check}"
if [[ $# -gt 0 && "$1" != -* ]]; then
  out="$1"
  shift
fi
mkdir -p "$out"

py="${PYTHON:-python3}"
if [[ -z "${PYTHON:-}" && -x .venv/bin/python ]] && .venv/bin/python -c "import torch" 2>/dev/null; then
  py=.venv/bin/python
fi
if compgen -G ".whl/*.whl" >/dev/null; then
  site="$(mktemp -d /tmp/viz-site.XXXXXX)"
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl \
    || { echo "gpu_check.sh: could not install the wheels in .whl/" >&2; exit 2; }
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
"$py" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "GPUs", torch.cuda.device_count())'

status=0
# -W default: a newer or older torch warns about other things than this project's pins; the log keeps them
timeout 240 "$py" -m pytest tests/device/test_cuda_lane.py -m gpu -q -rs -W default -p no:cacheprovider \
  --junitxml "$out/lane.xml" >"$out/lane.log" 2>&1
lane=$?
tail -n 25 "$out/lane.log"
# 5: nothing collected; a run whose every test skipped (no CUDA) exits 0
if [[ $lane -ne 0 ]]; then
  echo "gpu_check.sh: the CUDA lane exited $lane (see $out/lane.log)" >&2
  status=1
fi
cap=150  # the measurements write their files after each step: a run stopped here keeps what it measured
command -v java >/dev/null && cap=400  # bench/latency.py through TorchServe too
timeout "$cap" "$py" scripts/gpu_check.py --out "$out" --lane "$out/lane.xml" "$@" 2>&1 | tee "$out/gpu_check.log"
bench=${PIPESTATUS[0]}
if [[ $bench -ne 0 ]]; then
  echo "gpu_check.sh: the measurements exited $bench (see $out/gpu_check.log)" >&2
  status=1
fi
exit $status
