#!/usr/bin/env bash
# One row of the generator recipe study (docs/train-gan.md, "The CPU recipe study"):
#   bash scripts/gan_study.sh ROW MINUTES [train-gan flags ...]
# trains a tiny StyleGAN2 on all MNIST digits for MINUTES of wall clock on one thread, then
# measures it exactly as `gangealing bench` does (eval-gan --n 2000: FD, precision, recall,
# digit shares) and appends one JSON line to $STUDY_DIR/results.jsonl.
set -euo pipefail
row=$1; minutes=$2; shift 2
dir=${STUDY_DIR:-runs/gan-study}
mkdir -p "$dir"
export OMP_NUM_THREADS=1
start=$(date +%s)
gangealing train-gan mnist --out "$dir/$row" --preset tiny --minutes "$minutes" --no-progress \
    --sample-every 500 --ckpt-every 500 "$@" > "$dir/$row.train.log" 2>&1
trained=$(date +%s)
metrics=$(gangealing eval-gan "$dir/$row" --data mnist --n 2000 --grid "$dir/$row.grid.png" 2> "$dir/$row.eval.log")
step=$(grep -o "stopped at step [0-9]*" "$dir/$row.train.log" | grep -o "[0-9]*$" || echo null)
echo "{\"row\": \"$row\", \"flags\": \"$*\", \"minutes\": $minutes, \"train_s\": $((trained - start)), \"step\": $step, \"eval\": $metrics}" >> "$dir/results.jsonl"
