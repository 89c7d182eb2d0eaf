#!/usr/bin/env bash
# Reproduce the latency-MNIST results (docs/results.md): every loss, for the seeds given.
# Usage: scripts/mnist_runs.sh OUTDIR SEED [SEED ...]   (one thread per process; run several in parallel)
set -euo pipefail
out=$1; shift
for seed in "$@"; do
  for loss in xentropy sum max time; do
    dir="$out/$loss-s$seed"
    if [ -f "$dir/summary.json" ] && grep -q '"finished": true' "$dir/summary.json"; then continue; fi
    if [ -f "$dir/checkpoint.npz" ]; then resume=(--resume); else rm -rf "$dir"; resume=(); fi
    EVENTPROP_THREADS=1 eventprop train "configs/mnist_$loss.yaml" --quiet --set train.seed="$seed" --out "$dir" "${resume[@]}"
  done
done
