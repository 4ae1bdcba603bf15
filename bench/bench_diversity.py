"""Benchmark: query time per round of the diversity strategies (coreset, badge, typiclust) beside BALD.

    .venv/bin/python bench/bench_diversity.py --threads 2      # N=40,000 pool, 1,000 labelled, batch 10

Two measurements, each repeated --repeats times (one JSON line per repeat, then one with the median):

- ``select``: the selection step alone on random embeddings of realistic size: h N×D (D = 84, LeNet's
  last-layer input; 128 for cnn/batchbald_cnn, 512 for resnet18) from a ReLU of Gaussians, p N×C
  (C = 10) a softmax of Gaussian logits, L labelled features; BALD's is bald() on K = 20 random
  log-probabilities plus the top-b.
- ``query``: loop.query as a run calls it, LeNet (untrained) on N random uint8 28×28 images: for the
  diversity strategies one deterministic pass over the pool and the labelled set (pool_embeddings)
  plus the selection, for BALD K = 20 MC-dropout samples of the head scored chunk by chunk.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from strategies import STRATEGIES, Embeddings, bald, select_top_k  # noqa: E402

DIVERSITY = ["coreset", "badge", "typiclust"]


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def timed(fn, repeats: int, event: str, **fields) -> None:
    seconds = []
    for i in range(repeats):
        t = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - t)
        emit(event=event, repeat=i, seconds=round(seconds[-1], 3), **fields)
    emit(event=event, median_s=round(statistics.median(seconds), 3), seconds=[round(s, 3) for s in seconds],
         threads=torch.get_num_threads(), **fields)


def bench_select(args) -> None:
    gen = torch.Generator().manual_seed(0)
    h = torch.relu(torch.randn(args.n, args.d, generator=gen))
    p = torch.softmax(2 * torch.randn(args.n, args.c, generator=gen), 1)
    lab = torch.relu(torch.randn(args.labeled, args.d, generator=gen))
    emb = Embeddings(h, p, lab)
    common = dict(n=args.n, d=args.d, c=args.c, labeled=args.labeled, batch=args.batch)
    for name in args.strategies:
        if name == "bald":
            lp = torch.log_softmax(2 * torch.randn(args.k, args.n, args.c, generator=gen), -1)
            timed(lambda: select_top_k(bald(lp), args.batch), args.repeats, "select", strategy="bald", k=args.k,
                  **common)
        else:
            select = STRATEGIES[name].select_embeddings
            timed(lambda: select(emb, args.batch, torch.Generator().manual_seed(1)), args.repeats, "select",
                  strategy=name, **common)


def bench_query(args) -> None:
    from config import Config
    from data import Images, PoolState
    from loop import StudyData, query
    from models import build_model
    from rng import torch_generator
    from strategies import get_strategy

    n = args.n + args.labeled
    x = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=torch_generator(0, "pool"))
    images = Images(x, (0.2860,), (0.3530,))
    y = torch.zeros(n, dtype=torch.long)
    data = StudyData(train=images, train_y=y, test=images, test_y=y, val_idx=torch.zeros(0, dtype=torch.long),
                     pool_idx=torch.arange(n), num_classes=10)
    state = PoolState(n)
    state.label(torch.arange(args.labeled), torch.zeros(args.labeled, dtype=torch.long), round_=0)
    model = build_model("lenet", 1, 28, 10, 0.5, torch_generator(0, "weights"))
    for name in args.strategies:
        cfg = Config(strategy=name, mc_samples=args.k, n_query=args.batch, eval_batch_size=args.chunk)
        strategy = get_strategy(name)
        timed(lambda: query(cfg, data, state, strategy, model, r=1), args.repeats, "query", strategy=name,
              model="lenet", pool=args.n, labeled=args.labeled, batch=args.batch,
              k=args.k if strategy.mc else 1, chunk=args.chunk)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40_000, help="unlabelled pool images (candidates)")
    parser.add_argument("--labeled", type=int, default=1_000)
    parser.add_argument("--d", type=int, default=84, help="embedding size (LeNet's last-layer input: 84)")
    parser.add_argument("--c", type=int, default=10)
    parser.add_argument("--k", type=int, default=20, help="MC samples for BALD")
    parser.add_argument("--batch", type=int, default=10, help="--n_query")
    parser.add_argument("--chunk", type=int, default=512, help="--eval_batch_size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--strategies", nargs="+", default=["bald", *DIVERSITY])
    parser.add_argument("--skip", choices=["select", "query"], action="append", default=[])
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if "select" not in args.skip:
        bench_select(args)
    if "query" not in args.skip:
        bench_query(args)


if __name__ == "__main__":
    main()
