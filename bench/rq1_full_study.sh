#!/usr/bin/env bash
# The RQ1 study in full (issue 25; docs/RESULTS_noise.md, to be extended): Fashion-MNIST, 30% of the images
# noisy at σ 0 (the same 30% marked, no noise added: the clean/noisy test split stays), 2 and 4; every strategy family, the embedding strategies on the model's features
# and on self-supervised ones, stochastic power-bald and power-entropy; seeds 1-3; 20 → 300 labels, 20 a
# round; then one run of the strongest with 20% symmetric label noise. 3 × 15 arms × 3 seeds + 4 × 3 = 147
# runs: many hours on 2 cores, so it is written to be run in parts: bench/reproduce.py reuses every complete
# run under OUT, and rerunning this script only adds what is missing. PART=sigma0|sigma2|sigma4|labels runs one part.
# Reductions (as RQ1's first study): --pool_subset 10000 (each round scores a seeded 10,000 of the pool),
# --stop_loss 0.03; and 20 labels a round instead of 10.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/rq1_full}
PART=${PART:-all}
COMMON="--seeds 1 2 3 --at 50 100 200 300 --targets 0.6 0.65 0.7 --dataset fashion_mnist --model lenet \
  --n_init_labeled 20 --n_query 20 --n_round 14 --pool_subset 10000 --stop_loss 0.03 --jobs 2"
SSL="--embedding self_supervised --ssl_epochs 10"
arms() {  # $1: a name for the noise setting, then its flags
  local name=$1; shift
  .venv/bin/python bench/reproduce.py $COMMON "$@" --strategies random entropy margin bald batchbald epig badge \
    coreset typiclust probcover --out "$OUT/$name/model_features"
  .venv/bin/python bench/reproduce.py $COMMON "$@" $SSL --strategies coreset typiclust probcover \
    --out "$OUT/$name/self_supervised"
  .venv/bin/python bench/reproduce.py $COMMON "$@" --acquisition power --strategies bald entropy \
    --out "$OUT/$name/power"
}
[[ $PART == all || $PART == sigma0 ]] && arms sigma0 --noise gaussian --noise_rate 0.3 --noise_std 0  # σ 0: no noise
[[ $PART == all || $PART == sigma2 ]] && arms sigma2 --noise gaussian --noise_rate 0.3 --noise_std 2
[[ $PART == all || $PART == sigma4 ]] && arms sigma4 --noise gaussian --noise_rate 0.3 --noise_std 4
if [[ $PART == all || $PART == labels ]]; then
  .venv/bin/python bench/reproduce.py $COMMON --noise gaussian --noise_rate 0.3 --noise_std 4 \
    --label_noise symmetric --label_noise_rate 0.2 --strategies random bald typiclust probcover \
    --out "$OUT/sigma4_label_noise"
fi
.venv/bin/python report.py "$OUT" --out reports/rq1_full --targets 0.6 0.65 0.7 --map noise_std --at 50 100 200 300
