#!/usr/bin/env bash
# The RQ1 study in full (issue 25; docs/RESULTS_noise.md, second part): Fashion-MNIST, 30% of the images
# noisy at σ 0 (the same 30% marked, no noise added: the clean/noisy test split stays), 2 and 4; every
# strategy family, the embedding strategies on the model's features and on self-supervised ones, stochastic
# power-bald and power-entropy; seeds 1-3; 20 → 300 labels, 20 a round; then the strongest with 20%
# symmetric label noise. 147 runs in all: more than one session of this 2-core machine, so it runs in
# tiers, the most telling first (PART=tier1|tier2|tier3|all). bench/reproduce.py reuses every complete run
# under OUT: rerunning a tier only adds what is missing, and a failed run does not stop the others.
#   tier1: σ 0, 2, 4 × random entropy bald power-bald badge coreset typiclust probcover (model features)
#   tier2: typiclust and probcover on self-supervised features, σ 4 and 0 (the encoder: --ssl_epochs 5)
#   tier3: random bald typiclust probcover with 20% symmetric label noise at σ 4; margin, epig and
#          power-entropy; seeds 4-5 for the close arms; σ 2's self-supervised arms; coreset on
#          self-supervised features; batchbald at σ 4 last (its query costs minutes a round here)
# Reductions (as RQ1's first study): --pool_subset 10000 (each round scores a seeded 10,000 of the pool),
# --stop_loss 0.03; 20 labels a round instead of 10 (so the sizes are 20, 40, …, 300: 40 stands for the issue's 50);
# the encoder trains 5 epochs, not the default 30.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/rq1_full}
PART=${PART:-all}
PY=.venv/bin/python
COMMON="--seeds 1 2 3 --at 40 100 200 300 --targets 0.6 0.65 0.7 --dataset fashion_mnist --model lenet \
  --n_init_labeled 20 --n_query 20 --n_round 14 --pool_subset 10000 --stop_loss 0.03 --jobs 2"
SSL="--embedding self_supervised --ssl_epochs 5"
declare -A NOISE=([sigma0]="--noise gaussian --noise_rate 0.3 --noise_std 0"
                  [sigma2]="--noise gaussian --noise_rate 0.3 --noise_std 2"
                  [sigma4]="--noise gaussian --noise_rate 0.3 --noise_std 4")
arm() {  # $1: the σ setting, $2: the arm's folder, then reproduce.py's flags; a failure is reported, not fatal
  local sigma=$1 name=$2; shift 2
  # shellcheck disable=SC2086
  $PY bench/reproduce.py $COMMON ${NOISE[$sigma]} "$@" --out "$OUT/$sigma/$name" \
    > "$OUT/logs/$sigma-$name.log" 2>&1 || echo "failed: $sigma/$name (see $OUT/logs/$sigma-$name.log)" >&2
}
ssl_arm() {  # typiclust first, alone: its two jobs (two seeds) train the encoders the others then read
  local sigma=$1; shift
  arm "$sigma" self_supervised $SSL --strategies typiclust
  arm "$sigma" self_supervised $SSL --strategies "$@"
}
mkdir -p "$OUT/logs"
if [[ $PART == all || $PART == tier1 ]]; then
  for sigma in sigma4 sigma0 sigma2; do
    arm $sigma model_features --strategies random entropy bald badge coreset typiclust probcover
    arm $sigma power --acquisition power --strategies bald
  done
fi
if [[ $PART == all || $PART == tier2 ]]; then
  for sigma in sigma4 sigma0; do ssl_arm $sigma probcover; done
fi
if [[ $PART == all || $PART == tier3 ]]; then
  $PY bench/reproduce.py $COMMON ${NOISE[sigma4]} --label_noise symmetric --label_noise_rate 0.2 \
    --strategies random bald typiclust probcover --out "$OUT/sigma4_label_noise" > "$OUT/logs/label_noise.log" 2>&1 \
    || echo "failed: sigma4_label_noise" >&2
  arm sigma4 model_features --strategies margin epig
  arm sigma4 power --acquisition power --strategies entropy
  for sigma in sigma4 sigma0; do  # seeds 4 and 5 where tier 1 left the differences from random within ~3 points
    arm $sigma model_features --seeds 1 2 3 4 5 --strategies random badge typiclust probcover
    arm $sigma power --seeds 1 2 3 4 5 --acquisition power --strategies bald
  done
  arm sigma0 model_features --strategies margin epig
  arm sigma0 power --acquisition power --strategies entropy
  ssl_arm sigma2 probcover
  arm sigma2 model_features --strategies margin epig
  arm sigma2 power --acquisition power --strategies entropy
  for sigma in sigma4 sigma0 sigma2; do arm $sigma self_supervised $SSL --strategies coreset; done
  arm sigma4 model_features --strategies batchbald  # last: a 10,000-candidate BatchBALD query is minutes a round
fi
$PY report.py "$OUT" --out reports/rq1_full --targets 0.6 0.65 0.7 --map noise_std --at 40 100 200 300
