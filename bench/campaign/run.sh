#!/usr/bin/env bash
# Issue 7 campaign for one dataset of ../shared/splits (fixed 80/10/10 split files):
#   defaults: seed defaults, 3 seeds, for bpr, lightgcn, simkgcl (kg_view fused = seed, and pure);
#   tune:     small Optuna searches on the validation split (budgets below, each trial
#             time-capped), then the best config of each search with 3 seeds.
# Usage: [PHASES="defaults tune"] bench/campaign/run.sh DATASET OUT    (needs `simkgcl` on PATH)
# The two phases are independent and may run as two processes at once.
set -euo pipefail
ds=$1; out=$2
phases=${PHASES:-defaults tune}
data=${SHARED:-../shared}/splits/$ds
seeds=2020,2021,2022
common=(show_progress=false threads=1 checkpoint_dir="$out/runs")
mkdir -p "$out"
log() { echo "### $(date +%T) $*"; }

if [[ " $phases " == *" defaults "* ]]; then
  for m in bpr lightgcn simkgcl; do
    log "defaults $m"
    simkgcl train --config configs/$m.yaml --dataset "$data" --seeds $seeds --json \
      "${common[@]}" > "$out/default-$m.json"
  done
  log "defaults simkgcl kg_view=pure"
  simkgcl train --config configs/simkgcl.yaml --dataset "$data" --seeds $seeds --json \
    "${common[@]}" kg_view=pure > "$out/default-simkgcl-pure.json"
fi

tune() {  # tune MODEL SPACE TRIALS TIME_BUDGET
  log "tune $1 ($3 trials, ${4}s per trial)"
  simkgcl tune --config configs/$1.yaml --space "$2" --dataset "$data" --trials "$3" \
    --prune-warmup 10 --out "$out/tune-$1" --json "${common[@]}" stopping_warmup=20 \
    time_budget="$4" > "$out/tune-$1.json"
  simkgcl train --config "$out/tune-$1/best.yaml" --dataset "$data" --seeds $seeds --json \
    "${common[@]}" > "$out/tuned-$1.json"
}
if [[ " $phases " == *" tune "* ]]; then
  tune simkgcl configs/spaces/simkgcl-focused.yaml 4 200
  tune lightgcn configs/spaces/lightgcn.yaml 3 120
  tune bpr configs/spaces/bpr.yaml 5 40
fi
log done
