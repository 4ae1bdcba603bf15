"""How much class structure is in an embedding? k-NN accuracy of the spaces the diversity strategies choose in.

TypiClust, ProbCover and core-set pick images that are typical or far apart in an embedding; they can only
help if images of one class lie together there. For each σ and seed this prepares a run's data exactly as
main.py does (split, seeded input noise) and classifies a seeded ``--queries`` of the pool images by their k
nearest among the rest of the pool (cosine, the L2-normalised features ProbCover uses; true labels), in
three spaces:

- ``pixels``: the normalised images as they are (noise included);
- ``model``: the penultimate features of the tool's classifier trained on ``--labels`` random pool images
  (what ``--embedding model`` gives the strategies early in a run);
- ``self_supervised``: the SimCLR encoder's features (``--embedding self_supervised``), read from the cache
  a study's runs filled (trained here if missing, with the same key).

Accuracy is printed for the clean and the noisy query images apart (σ 0: no image is noisy).

    .venv/bin/python bench/embedding_knn.py --dataset fashion_mnist --stds 0 4 --seeds 1 2 3 --ssl_epochs 5
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from config import parse_config  # noqa: E402
from data import load_dataset  # noqa: E402
from data.pool import PoolState  # noqa: E402
from loop import prepare_data, train_model  # noqa: E402
from rng import torch_generator  # noqa: E402
from selfsup import SSLSpec, default_cache_dir, self_supervised_features  # noqa: E402
from train import pool_embeddings  # noqa: E402


def knn_accuracy(ref_N_D: torch.Tensor, ref_y: torch.Tensor, query_Q_D: torch.Tensor, query_y: torch.Tensor,
                 k: int, chunk: int = 256) -> torch.Tensor:
    """Per query, whether the majority label of its k nearest references (cosine) is its label (bool Q).
    Ties between labels go to the smallest label (torch.mode)."""
    ref = F.normalize(ref_N_D.float(), dim=1)
    hits = []
    for s in range(0, query_Q_D.shape[0], chunk):
        q = F.normalize(query_Q_D[s:s + chunk].float(), dim=1)
        nearest = (q @ ref.T).topk(k, dim=1).indices
        hits.append(torch.mode(ref_y[nearest], dim=1).values == query_y[s:s + chunk])
    return torch.cat(hits)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--stds", nargs="+", type=float, default=[0.0, 4.0])
    p.add_argument("--noise_rate", type=float, default=0.3)
    p.add_argument("--seeds", nargs="+", type=int, default=[1])
    p.add_argument("--labels", type=int, default=100, help="random pool images the classifier is trained on")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--queries", type=int, default=2000, help="pool images classified by their neighbours")
    p.add_argument("--ssl_epochs", type=int, default=30)
    p.add_argument("--embedding_cache", default="")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args, passthrough = p.parse_known_args(argv)
    torch.set_num_threads(args.threads)
    print(f"{args.dataset}, {args.noise_rate:.0%} of images noisy: {args.k}-NN accuracy of {args.queries} pool images "
          f"among the rest (cosine), clean / noisy; model = LeNet on {args.labels} random labels; "
          f"self_supervised = --ssl_epochs {args.ssl_epochs}")
    print("| σ | seed | pixels | model | self_supervised |\n|---|---|---|---|---|")
    dataset = None
    for std in args.stds:
        for seed in args.seeds:
            cfg = parse_config(["--dataset", args.dataset, "--noise", "gaussian", "--noise_rate", str(args.noise_rate),
                                "--noise_std", str(std), "--seed", str(seed), "--no-wandb", *passthrough])
            if dataset is None:
                dataset = load_dataset(cfg.dataset, cfg.data_dir, image_size=cfg.image_size,
                                       test_fraction=cfg.test_fraction)
            data = prepare_data(cfg, dataset, torch.device("cpu"))
            state = PoolState(data.pool_idx.numel())
            chosen = torch.randperm(len(state), generator=torch_generator(seed, "embedding_knn"))[:args.labels]
            state.label(chosen, data.pool_y[chosen], round_=0)
            model, _ = train_model(cfg, data, state, 0)
            ssl = self_supervised_features(data.train, seed, SSLSpec(epochs=args.ssl_epochs),
                                           Path(args.embedding_cache or default_cache_dir()))
            # queries: a seeded 2,000 of the pool; references: the rest of the pool, with their true labels
            order = torch.randperm(data.pool_idx.numel(), generator=torch_generator(seed, "embedding_knn", "queries"))
            queries, refs = order[:args.queries], order[args.queries:]
            q_idx, ref_idx = data.pool_idx[queries], data.pool_idx[refs]
            noisy_q = data.noisy_of(queries) if cfg.noise_std > 0 else torch.zeros(queries.numel(), dtype=torch.bool)
            spaces = {"pixels": lambda idx: data.train.batch(idx).flatten(1),
                      "model": lambda idx: pool_embeddings(model, data.train, idx, 512)[0],
                      "self_supervised": lambda idx: ssl[idx]}
            cells = []
            for features in spaces.values():
                hit = knn_accuracy(features(ref_idx), data.train_y[ref_idx], features(q_idx), data.train_y[q_idx],
                                   args.k)
                clean = hit[~noisy_q].float().mean().item()
                cells.append(f"{clean:.3f} / {hit[noisy_q].float().mean().item():.3f}" if noisy_q.any()
                             else f"{clean:.3f}")
            print(f"| {std:g} | {seed} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
