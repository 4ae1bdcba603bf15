#!/usr/bin/env bash
# Do two commits compute the same runs? Runs three small configurations (bald with input noise; an entropy
# ensemble; badge with label noise and warm start) with each commit, in temporary git worktrees, and says
# whether rounds.csv (timing columns aside) and acquired.csv (the columns both write) are byte-identical.
# For refactors that must not change behaviour.   Usage: bash scripts/same_numbers.sh BEFORE [AFTER]   (AFTER: the working tree)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD before=$1 after=${2:-}
out=$(mktemp -d)
trap 'git worktree remove --force "$out/before" 2>/dev/null; [ -n "$after" ] && git worktree remove --force "$out/after" 2>/dev/null; rm -rf "$out"' EXIT
git worktree add -q --detach "$out/before" "$before"
trees=("$out/before" "$PWD")
if [ -n "$after" ]; then git worktree add -q --detach "$out/after" "$after"; trees[1]="$out/after"; fi
CONFIGS=(
  "--strategy bald --noise gaussian --noise_rate 0.2 --n_round 3 --min_steps 100 --seed 3 --run_name a"
  "--strategy entropy --uncertainty ensemble --ensemble_size 3 --n_round 2 --min_steps 50 --seed 4 --run_name b"
  "--strategy badge --label_noise symmetric --label_noise_rate 0.2 --warm_start continue --n_round 2 --min_steps 50 --seed 5 --run_name c"
)
for i in 0 1; do
  for args in "${CONFIGS[@]}"; do
    # shellcheck disable=SC2086
    (cd "${trees[$i]}" && "$ROOT/.venv/bin/python" main.py --dataset mnist_5k --n_init_labeled 20 --n_query 10 \
      --epochs 1 --threads 1 --no-wandb $args --output_dir "$out/runs$i" >/dev/null 2>&1)
  done
done
.venv/bin/python - "$out" <<'PY'
import glob, sys
import pandas as pd
from results import TIMING_COLUMNS
out, same = sys.argv[1], True
for name in "abc":
    [b], [a] = glob.glob(f"{out}/runs0/{name}_*"), glob.glob(f"{out}/runs1/{name}_*")
    rounds = [pd.read_csv(f"{d}/rounds.csv").drop(columns=TIMING_COLUMNS).to_csv(index=False) for d in (b, a)]
    # on the columns both have: a column added by a newer version (acquired.csv's draw_prob) is not a change
    frames = [pd.read_csv(f"{d}/acquired.csv", dtype=str, keep_default_na=False) for d in (b, a)]
    common = [c for c in frames[0].columns if c in frames[1].columns]
    acquired = [f[common].to_csv(index=False) for f in frames]
    ok = rounds[0] == rounds[1] and acquired[0] == acquired[1]
    same &= ok
    print(f"configuration {name}: rounds.csv (timing aside) and acquired.csv {'identical' if ok else 'DIFFER'}")
sys.exit(0 if same else 1)
PY
