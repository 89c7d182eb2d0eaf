# Sourced by the study scripts: resumable one-thread training runs, JOBS (default 2) at a time.

# train_run DIR CONFIG [ARGS...]: train CONFIG into the results folder DIR (log: DIR.log); a
# finished run is skipped, an unfinished one resumed from its checkpoint.
train_run() {
  local dir=$1 config=$2
  shift 2
  if [ -f "$dir/summary.json" ] && grep -q '"finished": true' "$dir/summary.json"; then return; fi
  local resume=()
  if [ -f "$dir/checkpoint.npz" ]; then resume=(--resume); else rm -rf "$dir"; fi
  EVENTPROP_THREADS=1 NUMBA_NUM_THREADS=1 eventprop train "$config" --quiet "$@" --out "$dir" "${resume[@]}" \
    > "$dir.log" 2>&1 || echo "FAILED: $dir (see $dir.log)"
}

# in_background CMD [ARGS...]: run CMD in the background, then wait while JOBS runs are going.
in_background() {
  "$@" &
  while [ "$(jobs -rp | wc -l)" -ge "${JOBS:-2}" ]; do sleep 2; done
}
