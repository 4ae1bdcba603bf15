"""Benchmark: the original report's constrained protocol, and the query step's scaling with pool size.

    .venv/bin/python bench/bench_round.py --rounds 10

With ``--models lenet resnet18:imagenet resnet18:imagenet@1000``, instead of the protocol: one bald round at 100
labels on mnist_5k per MODEL[:STEM][@STEPS] (``model_round`` lines: train/query/eval seconds and the steps
trained; @STEPS trains exactly that many steps, else the model's defaults), so a new default sits beside the
old in one run.

Runs rounds 0..--rounds of the protocol (Fashion-MNIST 60k/10k, lenet, 300 validation, 100 initial
labels, 10 queried per round, 100 epochs stretched to --min_steps (the project's default unless given),
batch 64, bald with K=20, no noise) through main.main, the same code every run uses, then scores
synthetic 28×28 pools of --scaling sizes, each in a fresh process so that its peak memory is its own.
Prints one JSON object per line:

- ``machine``: device, threads, torch, and the measured fp32 matmul rate (the hardware yardstick);
- ``round``: train/query/eval seconds, pool images scored per second, the round's FLOPs (counted by
  torch's FlopCounterMode on this model: trunk + K head samples over the scored pool, training steps,
  evaluation) and the achieved GFLOP/s, test accuracy, the process's peak resident memory;
- ``summary``: median and spread of seconds per round over rounds 1..N;
- ``scaling``: per pool size, query seconds, images/s and the child process's peak resident memory.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from results import read_rounds  # noqa: E402

PROTOCOL = ["--dataset", "fashion_mnist", "--model", "lenet", "--num_valid", "300", "--n_init_labeled", "100",
            "--n_query", "10", "--epochs", "100", "--batch_size", "64", "--strategy", "bald", "--mc_samples", "20",
            "--noise", "none", "--no-wandb"]


def emit(event: str, **fields) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def matmul_gflops(device: torch.device, n: int = 2048, repeats: int = 20) -> float:
    """Median fp32 GEMM rate: the yardstick for how close a round gets to the hardware."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    rates = []
    a @ b  # warm-up
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        rates.append(2 * n ** 3 / (time.perf_counter() - t) / 1e9)
    return statistics.median(rates)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def per_image_flops(model_name: str, k: int, batch_size: int) -> dict:
    """FLOPs per image of: the trunk, K head samples, a deterministic forward, and a training step."""
    from models import build_model
    from rng import torch_generator

    model = build_model(model_name, 1, 28, 10, 0.5, torch_generator(0, "bench"))
    x = torch.randn(batch_size, 1, 28, 28)
    y = torch.zeros(batch_size, dtype=torch.long)
    counts = {}
    # FlopCounterMode does not see oneDNN's layout-preserving ops: count on the plain path (same math).
    with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False):
        model.eval()
        h = model.trunk(x)
        masks = model.head.draw_masks(k, torch_generator(0, "m"), "cpu")
        for name, fn in {"trunk": lambda: model.trunk(x), "head_k": lambda: model.head.sample(h, k, masks=masks),
                         "forward": lambda: model(x)}.items():
            with FlopCounterMode(display=False) as counter:
                fn()
            counts[name] = counter.get_total_flops() / batch_size
    model.train()
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(model(x, torch_generator(0, "d")), y).backward()
    counts["train"] = counter.get_total_flops() / batch_size
    return counts


def run_protocol(rounds: int, device: str, threads: int, min_steps: int | None, extra: list = ()) -> None:
    import main

    with tempfile.TemporaryDirectory() as out:
        argv = [*PROTOCOL, "--n_round", str(rounds), "--device", device, "--threads", str(threads),
                "--output_dir", out] + ([] if min_steps is None else ["--min_steps", str(min_steps)]) + list(extra)
        with contextlib.redirect_stdout(sys.stderr):  # keep stdout for JSON lines only
            rc = main.main(argv)
        if rc != 0:
            raise SystemExit("the protocol run failed")
        [rounds_csv] = Path(out).rglob("rounds.csv")
        df = read_rounds(rounds_csv.parent)
    flops = per_image_flops("lenet", 20, 64)
    n_val, n_test = 300, 10_000
    for row in df.to_dict("records"):
        train_flops = row["train_epochs"] * row["n_labeled"] * flops["train"]  # one pass = n_labeled samples
        query_flops = row["n_scored"] * (flops["trunk"] + flops["head_k"])
        eval_flops = (n_val + n_test) * flops["forward"]
        total = train_flops + query_flops + eval_flops
        emit("round", round=int(row["round"]), n_labeled=int(row["n_labeled"]),
             train_s=round(row["train_s"], 4), query_s=round(row["query_s"], 4), eval_s=round(row["eval_s"], 4),
             round_s=round(row["round_s"], 4), train_steps=int(row["train_steps"]), test_acc=row["test_acc"],
             pool_scored=int(row["n_scored"]),
             images_per_s=round(row["n_scored"] / row["query_s"]) if row["n_scored"] else None,
             gflop=round(total / 1e9, 2), gflops_per_s=round(total / row["round_s"] / 1e9, 2),
             query_gflops_per_s=round(query_flops / row["query_s"] / 1e9, 2) if row["n_scored"] else None,
             peak_rss_mb=round(peak_rss_mb()))
    later = df[df["round"] >= 1]
    q = df[df["n_scored"] > 0]  # every round that queried (the last one does not)
    emit("summary", rounds=f"1..{rounds}", min_steps=min_steps, flags=" ".join(extra),
         median_train_steps=int(later["train_steps"].median()),
         median_round_s=round(later["round_s"].median(), 3),
         min_round_s=round(later["round_s"].min(), 3), max_round_s=round(later["round_s"].max(), 3),
         iqr_round_s=round(later["round_s"].quantile(0.75) - later["round_s"].quantile(0.25), 3),
         median_train_s=round(later["train_s"].median(), 3), median_query_s=round(q["query_s"].median(), 3),
         median_eval_s=round(later["eval_s"].median(), 3),
         median_images_per_s=round((q["n_scored"] / q["query_s"]).median()),
         final_test_acc=float(df["test_acc"].iloc[-1]), per_image_flops=flops, peak_rss_mb=round(peak_rss_mb()))


MODEL_ROUND = ["--dataset", "mnist_5k", "--num_valid", "300", "--n_init_labeled", "100", "--n_query", "10",
               "--n_round", "1", "--strategy", "bald", "--mc_samples", "20", "--no-wandb"]


def run_models(models: list, device: str, threads: int, extra: list = ()) -> None:
    """For each MODEL[:STEM][@STEPS] (e.g. resnet18:imagenet@1000): a bald run on mnist_5k through main.main with
    the model's own defaults (exactly STEPS steps when given); one ``model_round`` line with round 0's seconds
    (train on 100 labels, evaluate, query the pool) and the steps it trained (round 1 runs too: the last
    round, it queries nothing)."""
    import main

    for spec in models:
        model, _, steps = spec.partition("@")
        name, _, stem = model.partition(":")
        with tempfile.TemporaryDirectory() as out:
            argv = [*MODEL_ROUND, "--model", name, *(["--resnet_stem", stem] if stem else []), "--device", device,
                    "--threads", str(threads), "--output_dir", out, *extra,
                    # @STEPS: that many steps exactly (one-step epochs at most: a model's own --epochs default,
                    # 250 for resnet18, would ask for more), winning over a --min_steps for all
                    *(["--min_steps", steps, "--epochs", "1"] if steps else [])]
            with contextlib.redirect_stdout(sys.stderr):  # keep stdout for JSON lines only
                if main.main(argv) != 0:
                    raise SystemExit(f"the {spec} run failed")
            [rounds_csv] = Path(out).rglob("rounds.csv")
            row = read_rounds(rounds_csv.parent).iloc[0]
        emit("model_round", model=spec, n_labeled=int(row["n_labeled"]), train_steps=int(row["train_steps"]),
             train_s=round(row["train_s"], 3), query_s=round(row["query_s"], 3), eval_s=round(row["eval_s"], 3),
             round_s=round(row["round_s"], 3), test_acc=row["test_acc"], flags=" ".join(extra))


def scale_child(n: int, device: str, threads: int, chunk: int) -> None:
    """One query step (bald, K=20, lenet) over a synthetic pool of n uint8 28×28 images."""
    from config import Config
    from data import Images, PoolState
    from loop import StudyData, query
    from memory import resolve_device
    from models import build_model
    from rng import torch_generator
    from strategies import get_strategy

    dev = resolve_device(device)
    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
    x = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=torch_generator(0, "pool"))
    images = Images(x, (0.2860,), (0.3530,)).to(dev)
    y = torch.zeros(n, dtype=torch.long, device=dev)
    data = StudyData(train=images, train_y=y, test=images, test_y=y, val_idx=torch.zeros(0, dtype=torch.long),
                     pool_idx=torch.arange(n, device=dev), num_classes=10)
    state = PoolState(n)
    state.label(torch.arange(100), torch.zeros(100, dtype=torch.long), round_=0)
    model = build_model("lenet", 1, 28, 10, 0.5, torch_generator(0, "weights")).to(dev)
    cfg = Config(strategy="bald", mc_samples=20, n_query=10, eval_batch_size=chunk)
    rss_before = current_rss_mb()
    query(cfg, data, state, get_strategy("bald"), model, r=0)  # warm-up (kernels, allocator)
    _sync(dev)
    t = time.perf_counter()
    _, _, _, n_scored = query(cfg, data, state, get_strategy("bald"), model, r=1)
    _sync(dev)
    seconds = time.perf_counter() - t
    emit("scaling", pool=n, scored=n_scored, seconds=round(seconds, 3), images_per_s=round(n_scored / seconds),
         peak_rss_mb=round(peak_rss_mb()), rss_before_query_mb=round(rss_before),
         query_extra_mb=round(peak_rss_mb() - rss_before), device=str(dev))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--rounds", type=int, default=10, help="query rounds of the protocol (rounds 0..N)")
    parser.add_argument("--scaling", type=int, nargs="*", default=[10_000, 100_000, 1_000_000],
                        help="synthetic pool sizes for the query-step scaling table (none: skip)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    parser.add_argument("--chunk", type=int, default=512, help="pool scoring chunk (--eval_batch_size)")
    parser.add_argument("--skip_protocol", action="store_true")
    parser.add_argument("--min_steps", type=int, default=None,
                        help="--min_steps of the protocol run (default: the project's default)")
    parser.add_argument("--models", nargs="*", default=[],
                        help="MODEL[:STEM][@STEPS] … (e.g. lenet resnet18:imagenet resnet18:imagenet@1000): a round "
                             "at 100 labels on mnist_5k for each, with its own defaults, instead of the protocol")
    parser.add_argument("--_scale", type=int, help=argparse.SUPPRESS)
    args, extra = parser.parse_known_args()  # anything else goes to the protocol's main.py run
    if args._scale:
        return scale_child(args._scale, args.device, args.threads, args.chunk)
    from memory import resolve_device

    device = resolve_device(args.device)
    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    emit("machine", device=str(device), threads=torch.get_num_threads(), torch=torch.__version__,
         cpu_count=len(os.sched_getaffinity(0)), matmul_gflops=round(matmul_gflops(device), 1))
    if args.models:
        run_models(args.models, args.device, args.threads,
                   extra + ([] if args.min_steps is None else ["--min_steps", str(args.min_steps)]))
    elif not args.skip_protocol:
        run_protocol(args.rounds, args.device, args.threads, args.min_steps, extra)
    for n in args.scaling:
        subprocess.run([sys.executable, __file__, "--_scale", str(n), "--device", args.device,
                        "--threads", str(args.threads), "--chunk", str(args.chunk)], check=True)


if __name__ == "__main__":
    main()
