"""Reproduce a strategy comparison: run strategies × seeds, then tabulate accuracy and labels-to-target.

    .venv/bin/python bench/reproduce.py --preset gal2017 --dataset mnist_5k \\
        --strategies random entropy bald var_ratios mean_std batchbald --seeds 1 2 3 --n_round 38

Every run is a real ``main.py`` process (the code every user runs) with ``--threads 1``, ``--jobs`` of
them at a time, under ``OUT/<strategy>_seed<N>/``. A complete run found there is reused, so rerunning
the command only adds what is missing (an unfinished one is left where it is, and run again). Flags
this script does not know are passed to every run unchanged. It prints, and writes to ``--markdown``
if given:

- mean test accuracy (± standard error over seeds) at each ``--at`` labelled-set size;
- labels needed to reach each ``--targets`` test accuracy: the mean over seeds and the min–max, or
  "not reached" (with how many seeds reached it), beside the published figures where there are any.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reporting.stats import labels_needed, mean_sem, reach_text  # noqa: E402
from results import read_rounds  # noqa: E402

# Gal et al. 2017 (arXiv 1703.02910), Table 1: labels to reach 10% and 5% test error on full MNIST.
PUBLISHED = {
    "gal2017": {"random": (255, 835), "bald": (145, 335), "entropy": (165, 355), "var_ratios": (120, 295)},
}
PAPER = {"gal2017": "Gal et al. 2017, Table 1 (full MNIST, 10 per round)"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--strategies", nargs="+", default=["random", "entropy", "bald"])
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--out", default="runs/reproduce", help="parent folder of the run folders")
    p.add_argument("--jobs", type=int, default=max(1, len(os.sched_getaffinity(0))),
                   help="runs at a time, one torch thread each")
    p.add_argument("--at", nargs="+", type=int, default=[50, 100, 150, 200], help="labelled-set sizes to tabulate")
    p.add_argument("--targets", nargs="+", type=float, default=[0.90, 0.95], help="test accuracies to reach")
    p.add_argument("--markdown", default="", help="also write the tables to this Markdown file")
    return p.parse_known_args(argv)


def complete_run(parent: Path) -> Path | None:
    """The run folder under ``parent`` whose summary.json says complete, if any."""
    for summary in sorted(parent.glob("*/summary.json")):
        if json.loads(summary.read_text()).get("status") == "complete":
            return summary.parent
    return None


def run_one(out: Path, strategy: str, seed: int, passthrough: list) -> Path:
    """One main.py process in ``out/<strategy>_seed<N>/``; a complete earlier run there is reused."""
    parent = out / f"{strategy}_seed{seed}"
    done = complete_run(parent) if parent.exists() else None
    if done:
        return done
    cmd = [sys.executable, str(ROOT / "main.py"), *passthrough, "--strategy", strategy, "--seed", str(seed),
           "--threads", "1", "--no-wandb", "--output_dir", str(parent)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    print(f"done: {parent.name}", file=sys.stderr, flush=True)
    return complete_run(parent)


def load_rounds(folders: dict) -> pd.DataFrame:
    """rounds.csv of every run, with strategy and seed columns."""
    frames = []
    for (strategy, seed), folder in folders.items():
        df = read_rounds(folder)
        frames.append(df.assign(strategy=strategy, seed=seed))
    return pd.concat(frames, ignore_index=True)


def accuracy_table(rounds: pd.DataFrame, strategies: list, at: list) -> str:
    """Mean ± standard error of test accuracy at each labelled-set size, one row per strategy."""
    lines = ["| strategy | " + " | ".join(f"{n} labels" for n in at) + " |",
             "|---|" + "---|" * len(at)]
    for s in strategies:
        cells = []
        for n in at:
            acc = rounds[(rounds.strategy == s) & (rounds.n_labeled == n)].test_acc
            cells.append("{:.3f} ± {:.3f}".format(*mean_sem(acc)) if len(acc) else "–")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets_table(rounds: pd.DataFrame, strategies: list, targets: list, preset: str) -> str:
    """Labels to reach each target: mean and min–max over seeds, beside the published figures."""
    published = PUBLISHED.get(preset, {})
    head = [f"labels to {t:.0%} acc." for t in targets]
    if published:
        head += [f"paper: {1 - t:.0%} error" for t in targets]
    lines = ["| strategy | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    per_target = [labels_needed(rounds, t) for t in targets]
    for s in strategies:
        cells = [reach_text(series[s]) for series in per_target]
        if published:
            paper = published.get(s)
            cells += [str(paper[i]) if paper and i < len(paper) else "–" for i in range(len(targets))]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cost_table(rounds: pd.DataFrame, strategies: list) -> str:
    """Median optimizer steps, train seconds and round seconds per round, over every round and seed."""
    lines = ["| strategy | steps a round | train s a round | round s | runs' total s (mean) |", "|---|---|---|---|---|"]
    for s in strategies:
        r = rounds[rounds.strategy == s]
        total = r.groupby("seed").round_s.sum().mean()
        lines.append(f"| {s} | {r.train_steps.median():.0f} | {r.train_s.median():.2f} | {r.round_s.median():.2f} | "
                     f"{total:.0f} |")
    return "\n".join(lines)


def _option(passthrough: list, name: str, default: str = "") -> str:
    flag = f"--{name}"
    return passthrough[passthrough.index(flag) + 1] if flag in passthrough[:-1] else default


def main(argv=None) -> int:
    args, passthrough = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cells = [(s, seed) for seed in args.seeds for s in args.strategies]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {cell: pool.submit(run_one, out, *cell, passthrough) for cell in cells}
    failed = {cell: f.exception() for cell, f in futures.items() if f.exception()}
    for (strategy, seed), err in failed.items():  # one failed run does not hide the others
        print(f"failed: {strategy} seed {seed}: {err}", file=sys.stderr)
    folders = {cell: f.result() for cell, f in futures.items() if cell not in failed}
    if not folders:
        return 1
    rounds = load_rounds(folders)
    shown = [s for s in args.strategies if s in set(rounds.strategy)]
    preset = _option(passthrough, "preset")
    command = " ".join(["python", "bench/reproduce.py", *(argv if argv is not None else sys.argv[1:])])
    text = "\n\n".join([
        f"Command: `{command}`",
        f"Mean test accuracy ± standard error over seeds {', '.join(map(str, args.seeds))}:",
        accuracy_table(rounds, shown, args.at),
        "Labels needed to reach a test accuracy: mean over seeds (min–max)"
        + (f"; published: {PAPER[preset]}" if preset in PAPER else "") + ":",
        targets_table(rounds, shown, args.targets, preset),
        "Cost per round (medians over rounds and seeds; one torch thread a run, --jobs runs at a time):",
        cost_table(rounds, shown),
    ])
    if failed:
        text += "\n\nFailed runs, left out above: " + ", ".join(f"{s} seed {seed}" for s, seed in failed)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
