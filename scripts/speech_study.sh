#!/usr/bin/env bash
# The paper's SHD loss x architecture study (docs/results-speech.md), on spoken-dev by default.
# Usage: scripts/speech_study.sh OUTDIR EPOCHS SEED [SEED ...]
#   EPOCHS=paper keeps each config's own epoch count (the paper's: 200 for x-entropy, 300 otherwise);
#   CONFIGS="shd_sum_exp_ffwd ..."  runs only the named configs (default: all ten, in this order);
#   DATA=path/to/shd  to use the real SHD files;  JOBS=N  runs N trainings at once (one thread each);
#   SETS="train.ease_in=false train.batch_size=16"  overrides applied to every config.
# Every run is an ordinary results folder OUTDIR/<config>-s<seed>; rerunning resumes unfinished runs
# and skips finished ones. Summarise with: eventprop plot OUTDIR/* --out OUTDIR/figures
set -euo pipefail
out=$1; epochs=$2; shift 2
data=${DATA:-../shared/data/spoken-dev}
sets=()
for kv in ${SETS:-}; do sets+=(--set "$kv"); done
configs=${CONFIGS:-shd_xentropy shd_xentropy_400ms shd_sum_ffwd shd_sum_recurrent shd_sum_exp_ffwd shd_sum_exp_recurrent
         shd_max_ffwd shd_max_recurrent shd_time_ffwd shd_time_recurrent}
if [ "$epochs" != paper ]; then sets+=(--set "train.epochs=$epochs"); fi
. "$(dirname "$0")/_train_runs.sh"
mkdir -p "$out"
for seed in "$@"; do
  for c in $configs; do
    in_background train_run "$out/$c-s$seed" "configs/$c.yaml" --set "data.path=$data" \
      --set train.seed="$seed" "${sets[@]}"
  done
done
wait
