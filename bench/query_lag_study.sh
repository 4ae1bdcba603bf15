#!/usr/bin/env bash
# --query_lag 1 against 0: random and bald, 5 seeds, mnist_5k, the README's flags taken to 200 labels.
# Every run is a real main.py (bench/reproduce.py, --threads 1, JOBS at a time); rerunning adds what is missing.
#   bash bench/query_lag_study.sh [OUT]      (docs/RESULTS_query_lag.md: about 2 hours on 2 busy cores)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/query_lag}
JOBS=${JOBS:-2}
FLAGS=(--dataset mnist_5k --noise gaussian --noise_rate 0.1 --n_init_labeled 20 --n_query 10 --n_round 18
       --epochs 50 --strategies random bald --seeds 1 2 3 4 5 --jobs "$JOBS" --at 50 100 150 200 --targets 0.8 0.85)
for lag in 0 1; do
    .venv/bin/python bench/reproduce.py "${FLAGS[@]}" --out "$OUT/lag$lag" --markdown "$OUT/lag$lag.md" --query_lag "$lag"
done
