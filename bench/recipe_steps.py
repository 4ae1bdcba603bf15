"""Which training recipe learns most from a few labels, in how many steps: augmentation × schedule × steps.

For each labelled-set size, seed and recipe, a model (the tool's own data preparation, model and training)
is trained on a class-balanced random set of that size from the pool (the same set for every recipe of a
seed) and its test accuracy printed; then the mean ± standard error over seeds, and each recipe's paired
difference from the first one (today's recipe). No active learning: this isolates training.

    .venv/bin/python bench/recipe_steps.py --dataset mnist_5k --sizes 50 100 200 --seeds 1 2 3 \\
        --recipes none:constant:1000 shift:constant:1000 shift:onecycle:300:0.003

A recipe is AUGMENT:SCHEDULE:STEPS[:LR]. Flags this script does not know are passed to the configuration.

``--checkpoints 200 300 500`` also reads each constant-schedule recipe's accuracy after that many steps
from the same training (at the first epoch end at or past each, BatchNorm recalibrated on a copy), rows
named as the recipe with those steps: the prefix of a constant-rate run is that shorter run, exactly
(tests/test_bench_scripts.py), so accuracy against steps costs one training instead of one per length.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from config import parse_config  # noqa: E402
from data import initial_positions, load_dataset  # noqa: E402
from data.pool import PoolState  # noqa: E402
from loop import prepare_data, train_model  # noqa: E402
from reporting.stats import mean_sem  # noqa: E402
from train import evaluate, recalibrate_batchnorm  # noqa: E402


def checkpoint_reader(cfg, data, idx: torch.Tensor, wanted: list, found: dict):
    """An after_epoch callback: at the first epoch end at or past each of ``wanted`` steps, the test accuracy
    of a copy of the weights (BatchNorm recalibrated, as at the end of a fit) goes in found[steps]."""
    def read(model, steps: int) -> None:
        for c in [c for c in wanted if c <= steps and c not in found]:
            copied = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
            recalibrate_batchnorm(copied, data.train, idx, cfg.batch_size)
            found[c] = (evaluate(copied, data.test, torch.arange(len(data.test)), data.test_y,
                                 cfg.eval_batch_size)["acc"], steps)
    return read


def recipe_flags(recipe: str) -> list:
    """AUGMENT:SCHEDULE:STEPS[:LR] as configuration flags."""
    augment, schedule, steps, *lr = recipe.split(":")
    return ["--augment", augment, "--lr_schedule", schedule, "--min_steps", steps, *(["--lr", lr[0]] if lr else [])]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist_5k")
    p.add_argument("--sizes", nargs="+", type=int, default=[50, 100, 200])
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--recipes", nargs="+", default=["none:constant:1000", "shift:constant:1000"])
    p.add_argument("--checkpoints", nargs="*", type=int, default=[],
                   help="also read constant-schedule recipes after these many steps, from the same training")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args, passthrough = p.parse_known_args(argv)
    recipes = list(args.recipes)
    for recipe in args.recipes:
        augment, schedule, steps, *lr = recipe.split(":")
        if schedule == "constant":
            recipes += [":".join([augment, schedule, str(c), *lr]) for c in args.checkpoints if c < int(steps)]
    torch.set_num_threads(args.threads)
    print(f"{args.dataset}: test accuracy after training on a class-balanced random set (recipe = "
          "augment:schedule:steps[:lr])\n")
    print("| labels | seed | recipe | test acc | steps | train s |\n|---|---|---|---|---|---|")
    acc, dataset = {}, None
    for n in args.sizes:
        for seed in args.seeds:
            for recipe in args.recipes:
                cfg = parse_config(["--dataset", args.dataset, "--seed", str(seed), "--n_init_labeled", str(n),
                                    "--epochs", "1", "--no-wandb", *recipe_flags(recipe), *passthrough])
                if dataset is None:
                    dataset = load_dataset(cfg.dataset, cfg.data_dir, image_size=cfg.image_size,
                                           test_fraction=cfg.test_fraction)
                data = prepare_data(cfg, dataset, torch.device("cpu"))
                state = PoolState(data.pool_idx.numel())
                chosen = initial_positions(data.pool_y.cpu(), n, seed)
                state.label(chosen, data.pool_y.cpu()[chosen], round_=0)
                found = {}
                wanted = [c for c in args.checkpoints if c < cfg.min_steps] if cfg.lr_schedule == "constant" else []
                idx = data.pool_idx[state.labeled_positions()]
                start = time.perf_counter()
                model, fitted = train_model(cfg, data, state, 0,
                                            after_epoch=checkpoint_reader(cfg, data, idx, wanted, found))
                seconds = time.perf_counter() - start
                acc[n, seed, recipe] = evaluate(model, data.test, torch.arange(len(data.test)), data.test_y,
                                                cfg.eval_batch_size)["acc"]
                for c, (a, steps) in sorted(found.items()):
                    augment, schedule, _, *lr = recipe.split(":")
                    shorter = ":".join([augment, schedule, str(c), *lr])
                    acc[n, seed, shorter] = a
                    print(f"| {n} | {seed} | {shorter} | {a:.4f} | {steps} | (same training) |", flush=True)
                print(f"| {n} | {seed} | {recipe} | {acc[n, seed, recipe]:.4f} | {fitted['steps']} | {seconds:.1f} |",
                      flush=True)
    print("\nMean test accuracy ± s.e. over seeds; Δ: paired difference from the first recipe (± s.e.)\n")
    print("| recipe | " + " | ".join(f"{n} labels | Δ {n}" for n in args.sizes) + " |")
    print("|---|" + "---|---|" * len(args.sizes))
    base = args.recipes[0]
    for recipe in recipes:
        cells = []
        for n in args.sizes:
            m, se = mean_sem([acc[n, s, recipe] for s in args.seeds])
            dm, dse = mean_sem([acc[n, s, recipe] - acc[n, s, base] for s in args.seeds])
            cells.append(f"{m:.3f} ± {se:.3f} | {dm:+.3f} ± {dse:.3f}")
        print(f"| {recipe} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
