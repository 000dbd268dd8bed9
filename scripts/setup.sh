#!/usr/bin/env bash
# Make .venv with the pinned packages (again only when a requirements file changed) and check for Java 17.
# Usage: scripts/setup.sh [--dev]   (--dev adds the test tools of requirements-dev.txt, and .venv-kserve)
set -euo pipefail
cd "$(dirname "$0")/.."

want=requirements.txt kind=base
[[ "${1:-}" == "--dev" ]] && want=requirements-dev.txt kind=dev
py=${PYTHON:-python3}

if ! "$py" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 10))' 2>/dev/null; then
  echo "setup: Python 3.10 or newer is needed (found: $("$py" --version 2>&1 || echo none)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

stamp=.venv/.installed-$kind-$(cat requirements.txt "$want" | sha256sum | cut -c1-16)
if [[ ! -f "$stamp" ]]; then
  [[ -x .venv/bin/python ]] || "$py" -m venv .venv
  echo "setup: installing pinned packages from $want into .venv (first time: a few minutes, about 5 GB)" >&2
  log=$(mktemp)
  # VIZ_TORCH_INDEX (the CPU Docker image sets PyTorch's CPU wheel index) installs the pinned torch from there first;
  # where that index cannot be reached, the pinned torch comes from pip's own index below (the CUDA build).
  if [[ -n "${VIZ_TORCH_INDEX:-}" ]]; then
    pins=$(grep -E '^(torch|torchvision)==' requirements.txt)
    # shellcheck disable=SC2086
    if .venv/bin/python -m pip install --disable-pip-version-check --retries 1 --timeout 30 \
        --index-url "$VIZ_TORCH_INDEX" $pins >"$log" 2>&1; then
      echo "setup: torch from $VIZ_TORCH_INDEX" >&2
    else
      grep -v "^WARNING: Location" "$log" | tail -3 >&2
      echo "setup: torch from $VIZ_TORCH_INDEX failed (unreachable from here?); installing the pinned torch from" >&2
      echo "       pip's index instead: the registry's CUDA build, about 4 GB more, which runs on the CPU too" >&2
    fi
  fi
  if ! .venv/bin/python -m pip install --disable-pip-version-check -r "$want" >"$log" 2>&1; then
    grep -v "^WARNING: Location" "$log" | tail -20 >&2
    echo "setup: pip install failed (whole log: $log)" >&2
    exit 1
  fi
  rm -f "$log" .venv/.installed-"$kind"-*
  touch "$stamp"
fi

# KServe's model server (kserve/front.py, in front of TorchServe in the KServe tests) in a venv of its own: its pins
# (psutil<6, protobuf, grpcio) are not this project's, and TorchServe never imports it.
if [[ "$kind" == dev ]]; then
  front_stamp=.venv-kserve/.installed-$(sha256sum < requirements-kserve.txt | cut -c1-16)
  if [[ ! -f "$front_stamp" ]]; then
    [[ -x .venv-kserve/bin/python ]] || "$py" -m venv .venv-kserve
    echo "setup: installing KServe's model server from requirements-kserve.txt into .venv-kserve (about 500 MB)" >&2
    log=$(mktemp)
    if ! .venv-kserve/bin/python -m pip install --disable-pip-version-check -r requirements-kserve.txt >"$log" 2>&1; then
      grep -v "^WARNING: Location" "$log" | tail -20 >&2
      echo "setup: pip install into .venv-kserve failed (whole log: $log)" >&2
      exit 1
    fi
    rm -f "$log" .venv-kserve/.installed-*
    touch "$front_stamp"
  fi
fi

# The gallery tests open pages in a headless Chromium (Debian's package); install it when we may.
if [[ "$kind" == dev ]] && ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian's chromium for the gallery and explorer tests" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
      || echo "setup: could not install chromium; the gallery and explorer tests will fail until it is there" >&2
  else
    echo "setup: the gallery and explorer tests need Chromium: sudo apt-get install chromium (or your system's package)" >&2
  fi
fi

# The shared job store's tests start a private redis-server (Debian's package); install it when we may.
if [[ "$kind" == dev ]] && ! command -v redis-server >/dev/null 2>&1; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian's redis-server for the shared job store's tests" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >/dev/null 2>&1 \
      || echo "setup: could not install redis-server; the shared job store's tests will be skipped" >&2
  else
    echo "setup: the shared job store's tests need redis-server: sudo apt-get install redis-server (else skipped)" >&2
  fi
fi

# TorchServe's front end is Java: it needs a JDK/JRE 17 (11 works for 0.12, 17 is what we test).
if ! command -v java >/dev/null 2>&1; then
  echo "setup: Java not found. TorchServe needs Java 17: on Debian/Ubuntu 'sudo apt-get install openjdk-17-jre-headless'," >&2
  echo "       on macOS 'brew install openjdk@17'; or set JAVA_HOME to a JDK 17." >&2
  exit 1
fi
jv=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
if [[ -z "$jv" || "$jv" -lt 11 ]]; then
  echo "setup: Java ${jv:-?} found; TorchServe needs 17 (11 at least): 'sudo apt-get install openjdk-17-jre-headless'" >&2
  exit 1
fi
