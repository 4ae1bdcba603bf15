"""Benchmark: BatchBALD selection time on random consistent MC predictions.

    .venv/bin/python bench/bench_batchbald.py            # N=2000, K=20, C=10, batch 10, 10,000 samples

Log-probabilities are Dirichlet(alpha) draws, independent for every sample and item: the K "models"
disagree a lot, so the joint MI grows fast and few sampled configurations repeat (the hard case for
the duplicate merging). Prints one JSON line: the median and all seconds over --repeats runs, the
threads, the working dtype, the picks and the joint MI estimate of the batch.
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

from strategies.batchbald import DEFAULT_CHUNK_BYTES, batchbald_select  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--c", type=int, default=10)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--num_samples", type=int, default=10_000)
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--chunk_mb", type=float, default=DEFAULT_CHUNK_BYTES / 2**20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    gen = torch.Generator().manual_seed(0)
    gamma = torch._standard_gamma(torch.full((args.k, args.n, args.c), args.alpha), generator=gen)
    log_probs = (gamma / gamma.sum(-1, keepdim=True)).clamp_min(1e-30).log()  # float32, as the models give
    seconds = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        positions, gains = batchbald_select(log_probs, args.batch, torch.Generator().manual_seed(1),
                                            args.num_samples, dtype=getattr(torch, args.dtype),
                                            chunk_bytes=int(args.chunk_mb * 2**20))
        seconds.append(time.perf_counter() - t)
    print(json.dumps({"event": "batchbald", "n": args.n, "k": args.k, "c": args.c, "batch": args.batch,
                      "num_samples": args.num_samples, "dtype": args.dtype, "chunk_mb": args.chunk_mb,
                      "threads": torch.get_num_threads(), "median_s": round(statistics.median(seconds), 3),
                      "seconds": [round(s, 3) for s in seconds], "positions": positions.tolist(),
                      "joint_mi": round(float(gains.sum()), 6)}), flush=True)


if __name__ == "__main__":
    main()
