"""Benchmark: milliseconds per training step, beside a yardstick measured in the same run.

    .venv/bin/python bench/bench_train_step.py                      # lenet and cnn, batch 20 and 64, 1 and 2 threads
    .venv/bin/python bench/bench_train_step.py --models lenet --batch 64 --threads 2 --layouts nchw channels_last

Each configuration runs train.train_epoch (the code every round uses: forward with dropout, cross-entropy,
backward, fused Adam) on one batch of random 28×28 images, ``--steps`` steps at a time, ``--repeats``
times; the median ms per step is printed as a JSON line beside:

- ``step_mflop``: the step's floating-point operations, counted by torch's FlopCounterMode;
- ``gemm_gflops``: the fp32 GEMM rate measured just before, with the same threads (the machine at that
  moment, other load included);
- ``yardstick_ms``: step_mflop / gemm_gflops, what the step would take at GEMM speed, and ``ratio``,
  measured / yardstick.

Each thread count runs in a process of its own (switching torch's thread pool back and forth in one
process made the 2-thread figures erratic: 5–170 ms for the same step); within it, configurations are
interleaved round-robin over the repeats, so a change in the machine's load affects them alike. Measure
on a quiet machine (nothing else running) and quote medians and ratios.
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
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from models import build_model  # noqa: E402
from rng import torch_generator  # noqa: E402
from train import Step, make_optimizer, train_epoch, training_layout  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--models", nargs="+", default=["lenet", "cnn"])
    p.add_argument("--batch", nargs="+", type=int, default=[20, 64])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--layouts", nargs="+", default=["default"], choices=["default", "nchw", "channels_last"],
                   help="default: the layout train.fit trains in (train.training_layout); nchw / channels_last "
                        "force a memory format")
    p.add_argument("--steps", type=int, default=50, help="steps per timed repeat")
    p.add_argument("--repeats", type=int, default=7)
    return p.parse_args(argv)


class Config:
    """One configuration: a model, its optimizer and one batch, ready to step."""

    def __init__(self, model: str, batch: int, threads: int, layout: str):
        self.name = dict(model=model, batch=batch, threads=threads, layout=layout)
        self.threads = threads
        self.model = build_model(model, 1, 28, 10, 0.5, torch_generator(0, "bench", model))
        self.x = torch.randn(batch, 1, 28, 28, generator=torch_generator(0, "x"))
        self.y = torch.randint(0, 10, (batch,), generator=torch_generator(0, "y"))
        fmt = {"default": training_layout(self.x), "channels_last": torch.channels_last,
               "nchw": torch.contiguous_format}[layout]
        self.model = self.model.to(memory_format=fmt)
        self.x = self.x.contiguous(memory_format=fmt)
        self.optimizer = make_optimizer(self.model, "adam", 1e-3, 0.0, 0.9)
        self.gen = torch_generator(0, "dropout")
        self.losses = torch.empty(1)
        self.times_ms: list = []

    def step(self, n: int) -> None:
        for _ in range(n):
            train_epoch(self.model, self.x, self.y, Step(self.optimizer), self.x.shape[0], self.gen, self.losses)

    def time(self, n: int) -> None:
        torch.set_num_threads(self.threads)
        t = time.perf_counter()
        self.step(n)
        self.times_ms.append((time.perf_counter() - t) / n * 1000)

    def step_flops(self) -> float:
        with FlopCounterMode(display=False) as counter:
            self.step(1)
        return counter.get_total_flops()


def strip_threads(argv: list) -> list:
    """argv without its --threads values."""
    out, skipping = [], False
    for a in argv:
        if a == "--threads":
            skipping = True
            continue
        if skipping and not a.startswith("--"):
            continue
        skipping = False
        out.append(a)
    return out


def gemm_gflops(threads: int, n: int = 1024, repeats: int = 15) -> float:
    """Median fp32 GEMM rate with ``threads`` threads."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        rates.append(2 * n ** 3 / (time.perf_counter() - t) / 1e9)
    return statistics.median(rates)


def main(argv=None) -> int:
    args = parse_args(argv)
    if len(args.threads) > 1:  # one child process per thread count, one after another
        for t in args.threads:
            argv_t = [a for a in (argv if argv is not None else sys.argv[1:])]
            subprocess.run([sys.executable, __file__, *strip_threads(argv_t), "--threads", str(t)], check=True)
        return 0
    torch.set_num_threads(args.threads[0])
    configs = [Config(*c) for c in itertools.product(args.models, args.batch, args.threads, args.layouts)]
    gemm = {t: gemm_gflops(t) for t in args.threads}
    for c in configs:  # warm-up: oneDNN picks and caches its kernels on the first steps
        torch.set_num_threads(c.threads)
        c.step(10)
    for _ in range(args.repeats):
        for c in configs:
            c.time(args.steps)
    for c in configs:
        ms = statistics.median(c.times_ms)
        mflop = c.step_flops() / 1e6
        yardstick = mflop / gemm[c.threads]  # MFLOP / (GFLOP/s) = ms
        print(json.dumps({**c.name, "ms_per_step": round(ms, 3), "min_ms": round(min(c.times_ms), 3),
                          "max_ms": round(max(c.times_ms), 3), "step_mflop": round(mflop, 1),
                          "gemm_gflops": round(gemm[c.threads], 1), "yardstick_ms": round(yardstick, 3),
                          "ratio": round(ms / yardstick, 2)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
