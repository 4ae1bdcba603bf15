"""Fit, evaluate and MC-predict. Data come as Images plus index tensors; batches are index slices."""
from __future__ import annotations

import sys
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from tqdm import tqdm

from models import TrunkHeadModel


def make_optimizer(model: torch.nn.Module, name: str, lr: float, weight_decay: float,
                   momentum: float) -> torch.optim.Optimizer:
    """Adam, or SGD with (Nesterov-free) momentum; both with L2 weight decay."""
    # The fused kernels update all parameters in one call (CPU and CUDA): ~8% off a LeNet step.
    fused = all(p.device.type in ("cpu", "cuda") for p in model.parameters()) or None
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay, fused=fused)
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")


def fit(model: TrunkHeadModel, images, idx: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
        epochs: int, batch_size: int, shuffle_gen: torch.Generator, dropout_gen: torch.Generator,
        desc: str = "epochs") -> float:
    """Train on images[idx] with labels y for ``epochs`` passes; returns the last epoch's mean loss.

    ``shuffle_gen`` (CPU) orders each epoch; ``dropout_gen`` (on the model's device) draws the masks.
    """
    model.train()
    n = idx.numel()
    epoch_loss = float("nan")
    for _ in tqdm(range(epochs), desc=desc, leave=False, disable=not sys.stderr.isatty()):
        order = torch.randperm(n, generator=shuffle_gen).to(idx.device)
        total = torch.zeros((), device=idx.device)
        for start in range(0, n, batch_size):
            batch = order[start:start + batch_size]
            loss = F.cross_entropy(model(images.batch(idx[batch]), dropout_gen), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * batch.numel()
        epoch_loss = float(total) / n  # one device sync per epoch, not per batch
    recalibrate_batchnorm(model, images, idx, batch_size)
    return epoch_loss


@torch.no_grad()
def recalibrate_batchnorm(model: TrunkHeadModel, images, idx: torch.Tensor, batch_size: int) -> None:
    """Recompute BatchNorm running statistics with the final weights over the training images.

    With a few dozen steps on a small labelled set, the running averages mix statistics of early,
    very different weights, and the eval-mode network can collapse to one class. A cumulative
    average over one pass with the final weights (as in SWA's update_bn) removes that lag.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    model.trunk.train()
    for start in range(0, idx.numel(), batch_size):
        model.trunk(images.batch(idx[start:start + batch_size]))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


@torch.inference_mode()
def evaluate(model: TrunkHeadModel, images, idx: torch.Tensor, y: torch.Tensor, chunk: int) -> dict:
    """Accuracy and mean cross-entropy of the deterministic (dropout-off) model on images[idx]."""
    model.eval()
    correct = torch.zeros((), device=idx.device)
    loss = torch.zeros((), device=idx.device)
    for start in range(0, idx.numel(), chunk):
        logits = model(images.batch(idx[start:start + chunk]))
        target = y[start:start + chunk]
        correct += (logits.argmax(1) == target).sum()
        loss += F.cross_entropy(logits, target, reduction="sum")
    n = max(idx.numel(), 1)
    return {"acc": float(correct) / n, "loss": float(loss) / n}


@torch.inference_mode()
def log_probs_chunks(model: TrunkHeadModel, images, idx: torch.Tensor, k: int, mc: bool,
                     generator: torch.Generator, chunk: int) -> Iterator[torch.Tensor]:
    """log_probs_K_n_C for consecutive chunks of images[idx] (memory bounded by ``chunk``).

    With ``mc``, K dropout samples of the head over one trunk pass; otherwise K=1, dropout off.
    """
    model.eval()
    # One set of K masks for the whole pool: chunking changes neither the scores nor their consistency.
    masks = model.head.draw_masks(k, generator, idx.device) if mc else None
    for start in range(0, idx.numel(), chunk):
        x = images.batch(idx[start:start + chunk])
        logits = model.mc_logits(x, k, masks=masks) if mc else model(x).unsqueeze(0)
        yield torch.log_softmax(logits, dim=-1)


def score_pool(model: TrunkHeadModel, images, idx: torch.Tensor, score: Callable, k: int, mc: bool,
               generator: torch.Generator, chunk: int) -> torch.Tensor:
    """scores_N for images[idx], chunk by chunk: only N scores are ever held, not K×N×C.

    The output is allocated once and filled in place: keeping thousands of small per-chunk results
    alive between the large per-chunk temporaries fragments the heap, and resident memory then grew
    by ~1.8 GB over a 1M-image pool.
    """
    scores_N = torch.empty(idx.numel(), device=idx.device)
    start = 0
    for lp in log_probs_chunks(model, images, idx, k, mc, generator, chunk):
        scores_N[start:start + lp.shape[1]] = score(lp)
        start += lp.shape[1]
    return scores_N


def pool_log_probs(model: TrunkHeadModel, images, idx: torch.Tensor, k: int, mc: bool,
                   generator: torch.Generator, chunk: int) -> torch.Tensor:
    """log_probs_K_N_C of images[idx] on the CPU, all at once, for strategies that select a batch jointly.

    The same K consistent masks as score_pool (one set for the whole pool). The K×N×C output is
    allocated once and filled chunk by chunk, for the same reason as in score_pool.
    """
    out_K_N_C = None
    start = 0
    for lp in log_probs_chunks(model, images, idx, k, mc, generator, chunk):
        if out_K_N_C is None:
            out_K_N_C = torch.empty(lp.shape[0], idx.numel(), lp.shape[2], dtype=lp.dtype)
        out_K_N_C[:, start:start + lp.shape[1]] = lp.cpu()
        start += lp.shape[1]
    if out_K_N_C is None:
        raise ValueError("no pool items to predict")
    return out_K_N_C
