#!/usr/bin/env bash
# GPU benchmark: cuda backend vs cpu backend vs dense torch BPTT on the same GPU (SHD-shaped
# workload; 256 and 512 hidden, feed-forward and recurrent). One command, a few minutes on a GPU:
#   pip install -e '.[cuda,bench]'   # numba-cuda (+ torch for the BPTT baseline)
#   OUT=/some/dir scripts/gpu_bench.sh      # JSON -> $OUT/gpu_bench.json (else ./gpu_bench.json)
# Extra arguments go to scripts/gpu_bench.py (--help). Fails at once when no GPU is usable.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" scripts/gpu_bench.py "$@"
