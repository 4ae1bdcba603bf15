"""How hard is a noisy image? Choose the Gaussian input-noise strength for a noise study.

For each σ, a LeNet (the tool's own data preparation, model and training schedule) is trained on
``--labels`` random pool images of a run with ``--noise_rate`` of the images noisy, and its test
accuracy is printed separately on the clean and on the noisy test images, beside chance.

    .venv/bin/python bench/noise_strength.py --dataset fashion_mnist --stds 0.5 1 2 3 4 --labels 300

Flags this script does not know are passed to the run's configuration (for example ``--min_steps 200``).

A strength at which the noisy test images sit near chance while the clean ones do not is one at
which "a noisy image is hard to classify": the study then asks whether a strategy spends labels on them.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from config import parse_config  # noqa: E402
from data import load_dataset  # noqa: E402
from data.pool import PoolState  # noqa: E402
from loop import prepare_data, train_model  # noqa: E402
from rng import torch_generator  # noqa: E402
from train import evaluate  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--model", default="lenet")
    p.add_argument("--stds", nargs="+", type=float, default=[0.5, 1.0, 2.0, 3.0, 4.0])
    p.add_argument("--noise_rate", type=float, default=0.3)
    p.add_argument("--labels", type=int, default=300, help="random pool images the model is trained on")
    p.add_argument("--seeds", nargs="+", type=int, default=[1])
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args, passthrough = p.parse_known_args(argv)
    torch.set_num_threads(args.threads)
    print(f"{args.dataset}, {args.model}, {args.labels} random labels, noise_rate {args.noise_rate}: "
          "test accuracy on clean / noisy test images")
    print("| σ | seed | clean | noisy | all | train s |\n|---|---|---|---|---|---|")
    dataset = None
    for std in args.stds:
        for seed in args.seeds:
            cfg = parse_config(["--dataset", args.dataset, "--model", args.model, "--noise", "gaussian",
                                "--noise_rate", str(args.noise_rate), "--noise_std", str(std), "--seed", str(seed),
                                "--n_init_labeled", str(args.labels), "--no-wandb", *passthrough])
            if dataset is None:
                dataset = load_dataset(cfg.dataset, cfg.data_dir, image_size=cfg.image_size,
                                       test_fraction=cfg.test_fraction)
            data = prepare_data(cfg, dataset, torch.device("cpu"))
            state = PoolState(data.pool_idx.numel())
            chosen = torch.randperm(len(state), generator=torch_generator(seed, "noise_strength"))[:args.labels]
            state.label(chosen, data.pool_y[chosen], round_=0)
            start = time.perf_counter()
            model, _ = train_model(cfg, data, state, 0)
            seconds = time.perf_counter() - start
            # the split every run records in rounds.csv (test_acc_clean / test_acc_noisy)
            test = evaluate(model, data.test, torch.arange(len(data.test)), data.test_y, cfg.eval_batch_size,
                            noisy=data.noisy_T)
            acc = {"clean": test["acc_clean"], "noisy": test["acc_noisy"], "all": test["acc"]}
            print(f"| {std:g} | {seed} | {acc['clean']:.3f} | {acc['noisy']:.3f} | {acc['all']:.3f} | {seconds:.1f} |",
                  flush=True)
    print(f"chance: {1 / dataset.num_classes:.3f}")


if __name__ == "__main__":
    main()
