#!/usr/bin/env bash
# Download, here, the wheels a GPU machine without a registry needs for scripts/gpu_check.sh, into .whl/ (ignored by
# git; the device tool carries it when named in `carry`). Its image has Python 3.12 with torch, torchvision, numpy,
# Pillow, requests, PyYAML, psutil, matplotlib, tqdm and pytest, but not:
#   captum   the attributions (saliency, integrated gradients, deconvnet...; about 0.5 MB, its needs are there)
#   av       only with --with-av: video files and MP4 output (about 34 MB); the lane sends .npy clips and GIFs
# No Java and no TorchServe travel: gpu_check.py then compares with torchvision's plain pipeline in-process.
# Versions are requirements.txt's pins; the wheels are for CPython 3.12 on manylinux x86-64.
set -euo pipefail
cd "$(dirname "$0")/.."
py=python3
[[ -x .venv/bin/python ]] && py=.venv/bin/python
names=(captum)
[[ "${1:-}" == "--with-av" ]] && names+=(av)
rm -rf .whl
mkdir -p .whl
for name in "${names[@]}"; do
  pin="$(grep -E "^${name}==" requirements.txt)" || { echo "gpu_wheels.sh: no pin of $name in requirements.txt" >&2; exit 1; }
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$pin"
done
ls -l .whl
du -sh .whl
