#!/usr/bin/env bash
# The published SHD model and its ablations at full length (docs/results-speech.md, section 6.3).
# Usage: scripts/published_study.sh OUTDIR EPOCHS SEED [SEED ...]
#   DATA=path/to/shd  to use the real SHD files (default: spoken-dev);  JOBS=N  runs N trainings
#   at once (one thread each);  SETS="k=v ..."  overrides applied to every run (default: the
#   small-set adaptation of section 6.2: no ease-in, batch 16; SETS="" for the published schedule);
#   VARIANTS="published"  runs only the named variants (default: all three).
# Variants: published (configs/shd_published_best.yaml), no-delay-line (data.delay_copies=1),
# no-learned-tau (model.learn_tau=false). Every run is an ordinary results folder
# OUTDIR/<variant>-s<seed>; rerunning resumes unfinished runs from their checkpoints and skips
# finished ones. On 2 cores one spoken-dev epoch of the published model takes 55 s (silent hidden
# layer, first epochs) to 160 s (trained rate) per thread.
set -euo pipefail
out=$1; epochs=$2; shift 2
data=${DATA:-../shared/data/spoken-dev}
sets=()
for kv in ${SETS-train.ease_in=false train.batch_size=16}; do sets+=(--set "$kv"); done
variants=${VARIANTS:-published no-delay-line no-learned-tau}
extra() {
  case $1 in
    published) ;;
    no-delay-line) echo "--set data.delay_copies=1" ;;
    no-learned-tau) echo "--set model.learn_tau=false" ;;
  esac
}
. "$(dirname "$0")/_train_runs.sh"
mkdir -p "$out"
for seed in "$@"; do
  for v in $variants; do
    # shellcheck disable=SC2046
    in_background train_run "$out/$v-s$seed" configs/shd_published_best.yaml --set "data.path=$data" \
      --set "train.epochs=$epochs" --set train.seed="$seed" "${sets[@]}" $(extra "$v")
  done
done
wait
