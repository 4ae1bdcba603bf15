#!/usr/bin/env bash
# The training-recipe study (issue 28, docs/RESULTS_recipe.md): random, entropy and bald, 5 seeds, 20 → 200
# labels (the README's flags: 20 initial, 10 a round, --epochs 50; no noise), on mnist_5k and Fashion-MNIST,
# with three recipes: today's (no augmentation, constant lr 1e-3, 1,000 steps), augmentation (shift_rotate),
# and augmentation with the one-cycle schedule peaking at 3e-3 over 300 steps. Each bench/reproduce.py call
# reuses the complete runs it finds under its --out, so rerunning this script only adds what is missing.
# On Fashion-MNIST two recipes run, today's and augmentation (augmentation with the one-cycle schedule did
# not fit the session's time on 2 cores).
# Usage: bash bench/recipe_study.sh [OUT [DATASET…]]   (default runs/recipe, both; about 90 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/recipe}
PY=.venv/bin/python
DATASETS=("${@:2}")
[ ${#DATASETS[@]} -gt 0 ] || DATASETS=(mnist_5k fashion_mnist)
COMMON=(--seeds 1 2 3 4 5 --jobs 2 --at 50 100 150 200
        --n_init_labeled 20 --n_query 10 --n_round 18 --epochs 50 --no-wandb)
declare -A RECIPES=(
  [baseline]="--augment none --lr_schedule constant --min_steps 1000"
  [augment]="--augment shift_rotate --lr_schedule constant --min_steps 1000"
  [augment_onecycle]="--augment shift_rotate --lr_schedule onecycle --lr 0.003 --min_steps 300"
)
for dataset in "${DATASETS[@]}"; do
  extra=(--strategies random entropy bald) recipes=(baseline augment augment_onecycle)
  # Fashion-MNIST's pool is 59,000 images: each round scores a seeded random 10,000 of them (as RESULTS_noise)
  if [ "$dataset" = fashion_mnist ]; then
    extra=(--strategies random entropy bald --pool_subset 10000) recipes=(baseline augment)
  fi
  for recipe in "${recipes[@]}"; do
    # shellcheck disable=SC2086
    $PY bench/reproduce.py "${COMMON[@]}" --dataset "$dataset" ${RECIPES[$recipe]} "${extra[@]}" \
      --out "$OUT/$dataset/$recipe" --markdown "$OUT/$dataset/$recipe.md"
  done
done
