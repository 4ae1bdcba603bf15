"""Compare training recipes on a strategy study: accuracy at each size, paired differences by seed.

    .venv/bin/python bench/recipe_compare.py runs/recipe/mnist_5k --recipes baseline augment augment_onecycle

Reads ``FOLDER/<recipe>/<strategy>_seed<N>/`` (what bench/recipe_study.sh writes through bench/reproduce.py)
and prints Markdown: test accuracy (mean ± s.e. over seeds) per recipe, strategy and labelled-set size; each
recipe minus the first one per strategy, and each strategy minus random per recipe, paired by seed with
reporting.stats.paired_test (a paired t-test for 3-5 pairs); labels to the --target accuracy; steps and
seconds a round.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reporting.stats import labels_needed, mean_sem, paired_test, reach_text  # noqa: E402
from results import read_rounds  # noqa: E402


def load(folder: Path, recipes: list) -> pd.DataFrame:
    """Every complete run's rounds, with recipe, strategy and seed columns."""
    frames = []
    for recipe in recipes:
        for run in sorted((folder / recipe).glob("*_seed*/*/rounds.csv")):
            strategy, seed = run.parent.parent.name.rsplit("_seed", 1)
            df = read_rounds(run.parent)
            frames.append(df.assign(recipe=recipe, strategy=strategy, seed=int(seed)))
    return pd.concat(frames, ignore_index=True)


def at_size(rounds: pd.DataFrame, n: int) -> pd.Series:
    """Test accuracy at ``n`` labels by (recipe, strategy, seed)."""
    return rounds[rounds["n_labeled"] == n].set_index(["recipe", "strategy", "seed"])["test_acc"].sort_index()


def paired_cell(a: pd.Series, b: pd.Series) -> str:
    """a − b over the seeds both have: mean ± s.e., and the paired test's p."""
    seeds = sorted(set(a.index) & set(b.index))
    if not seeds:
        return "–"
    diff = [a[s] - b[s] for s in seeds]
    m, se = mean_sem(diff)
    _, p = paired_test([a[s] for s in seeds], [b[s] for s in seeds])
    return f"{m:+.3f} ± {se:.3f} (p {p:.2g}, n {len(seeds)})"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--recipes", nargs="+", required=True, help="subfolders; the first is the reference")
    p.add_argument("--at", nargs="+", type=int, default=[50, 100, 150, 200])
    p.add_argument("--target", type=float, default=0.90)
    args = p.parse_args(argv)
    rounds = load(args.folder, args.recipes)
    strategies = [s for s in ("random", "entropy", "bald") if s in set(rounds["strategy"])]
    sizes = {n: at_size(rounds, n) for n in args.at}
    head = "| " + " | ".join(f"{n} labels" for n in args.at) + " |"
    rule = "|---|---|" + "---|" * len(args.at)

    print("Test accuracy, mean ± s.e. over seeds:\n\n| recipe | strategy " + head + "\n" + rule)
    for recipe in args.recipes:
        for strategy in strategies:
            cells = [mean_sem(sizes[n].loc[recipe, strategy]) for n in args.at]
            print(f"| {recipe} | {strategy} | " + " | ".join(f"{m:.3f} ± {se:.3f}" for m, se in cells) + " |")

    base = args.recipes[0]
    print(f"\nEach recipe minus `{base}`, paired by seed (mean ± s.e., paired test p, pairs):\n\n"
          "| recipe | strategy " + head + "\n" + rule)
    for recipe in args.recipes[1:]:
        for strategy in strategies:
            cells = [paired_cell(sizes[n].loc[recipe, strategy], sizes[n].loc[base, strategy]) for n in args.at]
            print(f"| {recipe} | {strategy} | " + " | ".join(cells) + " |")

    print("\nEach strategy minus random, paired by seed: does active learning pay under each recipe?\n\n"
          "| recipe | strategy " + head + "\n" + rule)
    for recipe in args.recipes:
        for strategy in [s for s in strategies if s != "random"]:
            cells = [paired_cell(sizes[n].loc[recipe, strategy], sizes[n].loc[recipe, "random"]) for n in args.at]
            print(f"| {recipe} | {strategy} | " + " | ".join(cells) + " |")

    print(f"\nLabels to {args.target:.0%} test accuracy (mean over the seeds that reach it, min–max), and the cost "
          "of a round (medians):\n\n| recipe | strategy | labels to target | steps a round | train s a round | "
          "round s |\n|---|---|---|---|---|---|")
    for recipe in args.recipes:
        for strategy in strategies:
            runs = rounds[(rounds["recipe"] == recipe) & (rounds["strategy"] == strategy)]
            reach = reach_text(labels_needed(runs, args.target, by=("seed",)))
            print(f"| {recipe} | {strategy} | {reach} | {runs['train_steps'].median():.0f} | "
                  f"{runs['train_s'].median():.2f} | {runs['round_s'].median():.2f} |")


if __name__ == "__main__":
    main()
