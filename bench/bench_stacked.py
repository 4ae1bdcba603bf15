"""Benchmark: train M ensemble members one after the other, or stacked into one vmapped model.

    .venv/bin/python bench/bench_stacked.py --members 5 --batch 64 --threads 1

loop.train_model trains an ensemble's members one after the other (train.fit each). The alternative is
one stacked model: the members' parameters stacked along a new first dimension (torch.func's
stack_module_state), one vmapped forward and backward over M batches, and one Adam step over the stacked
parameters. This prints ms per member-step for both, as JSON lines (median over --repeats, interleaved),
so the faster can be kept on this machine. Timing only: the stacked variant draws its dropout masks from
one generator, so its numbers are not the sequential run's.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.func import functional_call, stack_module_state  # noqa: E402

from models import build_model  # noqa: E402
from rng import torch_generator  # noqa: E402
from train import Step, make_optimizer, train_epoch, training_layout  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="lenet")
    p.add_argument("--members", type=int, default=5)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    m = args.members
    members = [build_model(args.model, 1, 28, 10, 0.5, torch_generator(0, "weights", i)) for i in range(m)]
    x = torch.randn(m, args.batch, 1, 28, 28, generator=torch_generator(0, "x"))
    y = torch.randint(0, 10, (m, args.batch), generator=torch_generator(0, "y"))
    gen, losses = torch_generator(0, "dropout"), torch.empty(1)

    # Sequential: what loop.train_model does (each member in fit's training layout).
    fmt = training_layout(x[0])
    seq = [copy.deepcopy(net).to(memory_format=fmt) for net in members]
    xs = [x[i].contiguous(memory_format=fmt) for i in range(m)]
    opts = [make_optimizer(net, "adam", 1e-3, 0.0, 0.9) for net in seq]

    def sequential():
        for net, xi, yi, opt in zip(seq, xs, y, opts):
            train_epoch(net, xi, yi, Step(opt), args.batch, gen, losses)

    # Stacked: one vmapped call over the M members' stacked parameters.
    base = copy.deepcopy(members[0]).to("meta")
    params, buffers = stack_module_state([copy.deepcopy(net) for net in members])
    stacked_opt = torch.optim.Adam(list(params.values()), lr=1e-3)

    def one(p, b, xi, yi):
        return F.cross_entropy(functional_call(base, (p, b), (xi,), {"generator": gen}), yi)

    def stacked():
        base.train()
        loss = torch.vmap(one, randomness="different")(params, buffers, x, y).sum()
        stacked_opt.zero_grad(set_to_none=True)
        loss.backward()
        stacked_opt.step()

    runs = {"sequential": sequential, "stacked": stacked}
    times = {name: [] for name in runs}
    for name, fn in runs.items():
        fn()  # warm-up
    for _ in range(args.repeats):
        for name, fn in runs.items():
            t = time.perf_counter()
            for _ in range(args.steps):
                fn()
            times[name].append((time.perf_counter() - t) / args.steps / m * 1000)
    for name, ts in times.items():
        print(json.dumps({"variant": name, "model": args.model, "members": m, "batch": args.batch,
                          "threads": args.threads, "ms_per_member_step": round(statistics.median(ts), 3),
                          "min_ms": round(min(ts), 3), "max_ms": round(max(ts), 3)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
