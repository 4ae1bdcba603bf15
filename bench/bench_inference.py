"""Benchmark: what a round spends besides training, per model: evaluation, the query, BatchNorm recalibration.

    .venv/bin/python bench/bench_inference.py --models lenet resnet18:imagenet --threads 1 2

For each MODEL[:STEM] and thread count (each thread count in a process of its own), on random 28×28 images:

- ``eval``: train.evaluate over ``--eval_images`` (1,000: mnist_5k's test set) at each ``--chunks`` size;
- ``query``: train.score_pool with BALD, K = 20 dropout-head samples over one trunk pass, over ``--pool``
  images (3,500: mnist_5k's pool at 100 labels) at each chunk size;
- each of those in the NCHW layout the code uses and in channels_last (the model and every chunk converted),
  to see whether inference should follow training into channels_last;
- ``recalibrate``: train.recalibrate_batchnorm over ``--labels`` (100) images, batch 64.

Median seconds over ``--repeats``, configurations interleaved round-robin so that a change in the machine's
load affects them alike; one JSON line each. Measure on a quiet machine.
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from data.images import Images  # noqa: E402
from models import build_model  # noqa: E402
from strategies.scores import bald  # noqa: E402
from train import evaluate, recalibrate_batchnorm, score_pool  # noqa: E402


class Layout:
    """Images whose batches come in a memory format (what channels_last inference would do per chunk)."""

    def __init__(self, images: Images, fmt: torch.memory_format):
        self.images, self.fmt = images, fmt

    def batch(self, idx):
        return self.images.batch(idx).contiguous(memory_format=self.fmt)


def run_child(args) -> None:
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    n = max(args.eval_images, args.pool)
    images = Images(torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8), [0.13], [0.31])
    y = torch.randint(0, 10, (n,), generator=g)
    jobs = {}
    for spec in args.models:
        name, _, stem = spec.partition(":")
        model = build_model(name, 1, 28, 10, 0.5, torch.Generator().manual_seed(1),
                            **({"resnet_stem": stem} if stem else {}))
        for layout, fmt in (("nchw", torch.contiguous_format), ("channels_last", torch.channels_last)):
            m = build_model(name, 1, 28, 10, 0.5, torch.Generator().manual_seed(1),
                            **({"resnet_stem": stem} if stem else {})).to(memory_format=fmt)
            src = Layout(images, fmt)
            for chunk in args.chunks:
                jobs[spec, "eval", layout, chunk] = (lambda m=m, src=src, chunk=chunk: evaluate(
                    m, src, torch.arange(args.eval_images), y[:args.eval_images], chunk))
                jobs[spec, "query", layout, chunk] = (lambda m=m, src=src, chunk=chunk: score_pool(
                    m, src, torch.arange(args.pool), bald, 20, True, torch.Generator().manual_seed(2), chunk))
        jobs[spec, "recalibrate", "nchw", 64] = (lambda model=model: recalibrate_batchnorm(
            model, images, torch.arange(args.labels), 64))
    for fn in jobs.values():  # warm-up: oneDNN primitives, allocations
        fn()
    times = {key: [] for key in jobs}
    for _, (key, fn) in itertools.product(range(args.repeats), jobs.items()):
        t = time.perf_counter()
        fn()
        times[key].append(time.perf_counter() - t)
    for (spec, what, layout, chunk), ts in times.items():
        print(json.dumps({"model": spec, "what": what, "layout": layout, "chunk": chunk, "threads": args.threads,
                          "median_s": round(statistics.median(ts), 4), "min_s": round(min(ts), 4),
                          "repeats": len(ts)}), flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["lenet", "resnet18:imagenet"])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--chunks", nargs="+", type=int, default=[100, 256, 512])
    p.add_argument("--eval_images", type=int, default=1000)
    p.add_argument("--pool", type=int, default=3500)
    p.add_argument("--labels", type=int, default=100)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child:
        args.threads = args.threads[0]
        return run_child(args)
    for threads in args.threads:
        cmd = [sys.executable, __file__, "--_child", "--threads", str(threads), "--models", *args.models,
               "--chunks", *map(str, args.chunks), "--eval_images", str(args.eval_images), "--pool", str(args.pool),
               "--labels", str(args.labels), "--repeats", str(args.repeats)]
        subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
