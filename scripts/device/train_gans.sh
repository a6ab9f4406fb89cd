#!/usr/bin/env bash
# Train several generators at once on one GPU machine (and optional CPU study rows beside them), each
# with a wall-clock budget, and pack what comes back. Prepared for a short GPU lease: run it as one
# command there, from the repository root, after `python scripts/device/pack_data.py .devdata` here
# (carry .devdata). What was run in the 2026-12-04 lease: docs/train-gan.md, "The CPU recipe study".
#   MIN=8 OUT=/tmp/out bash scripts/device/train_gans.sh "g-cat-diffaug animals:cat --mirror --augment diffaug" ...
# Each argument: "NAME DATA [train-gan flags]" (at most 8: the device tool returns 8 files); names
# starting with c- train on the CPU (2 threads),
# others on the GPU (batch 64, lr 0.0025, no autocast). Exported generators, metrics and the last
# sample grid of each run are packed into OUT/NAME.tgz.
set -u
MIN=${MIN:-8}
OUT=${OUT:?set OUT to a folder for the results}
DEV=${GPUDEV:-cuda}
export PYTHONPATH=$PWD/src:$PWD/.devdata PYTHONUNBUFFERED=1
[ -f .devdata/unpack.py ] && python3 .devdata/unpack.py
mkdir -p runs logs "$OUT"
# Prepare each dataset once, before the runs start (they share the cache read-only).
python3 - "$@" <<'PY'
import sys
from gangealing.data import prepare_dataset
for spec in sorted({a.split()[1] for a in sys.argv[1:]}):
    print(spec, len(prepare_dataset(spec, 32, "center", ".devcache", split="train")))
PY
for spec in "$@"; do
  set -- $spec
  name=$1; data=$2; shift 2
  if [[ $name == c-* ]]; then
    OMP_NUM_THREADS=2 python3 -m gangealing train-gan "$data" --out runs/$name --preset tiny --device cpu \
      --cache-dir .devcache --no-progress --minutes "$MIN" --export runs/$name/generator.pt "$@" > logs/$name.log 2>&1 &
  else
    OMP_NUM_THREADS=1 python3 -m gangealing train-gan "$data" --out runs/$name --preset tiny --device "$DEV" --no-amp \
      --batch 64 --lr 0.0025 --cache-dir .devcache --no-progress --minutes "$MIN" --export runs/$name/generator.pt \
      "$@" > logs/$name.log 2>&1 &
  fi
done
wait
for r in runs/*; do
  n=$(basename "$r")
  echo "$n $(tail -1 logs/$n.log | cut -c1-300)"
  last=$(ls runs/$n/samples/*.png 2>/dev/null | tail -1)
  tar czf "$OUT/$n.tgz" runs/$n/generator.pt runs/$n/metrics.jsonl runs/$n/config.json logs/$n.log $last 2>/dev/null
done
