"""Fit, evaluate and MC-predict. Data come as Images plus index tensors; batches are index slices."""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from tqdm import tqdm

from augment import Augmenter
from memory import mc_chunk_rows
from models import Ensemble, TrunkHeadModel


class Diverged(RuntimeError):
    """Training stopped being finite (loss or weights): the run stops cleanly, its finished rounds kept."""


def check_finite(model: torch.nn.Module, loss: float, r: int) -> None:
    """Diverged when round r's training loss or any of the model's weights is NaN or infinite."""
    named = list(model.named_parameters())
    finite = torch.stack([torch.isfinite(p).all() for _, p in named]).tolist()  # one device sync
    bad = [name for (name, _), ok in zip(named, finite) if not ok]
    if bad or not math.isfinite(loss):
        weights = f"{len(bad)} weight tensor(s) not finite, such as {bad[0]}" if bad else "the weights finite"
        raise Diverged(f"round {r}: training diverged (training loss {loss}, {weights}); the run stops here and "
                       "its finished rounds are kept: lower --lr, or check --warm_start's --shrink and --perturb")


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


@dataclass(frozen=True)
class Schedule:
    """How long one round trains: the protocol knobs that decide whether a small labelled set converges.

    ``epochs`` passes, stretched to at least ``min_steps`` optimizer steps; an epoch is one pass over the
    labelled set, or ``epoch_samples`` draws from it when that is larger (BatchBALD's fixed-length
    epochs); with ``patience`` > 0, training stops after that many epochs without a better validation
    accuracy and the best weights are restored. With ``stop_loss`` > 0, training also stops at the end
    of the first epoch, at or after ``stop_min_steps`` steps, where the training loss averaged over the
    last ``stop_window`` steps is below ``stop_loss`` (converged); the stretched budget is then the most.
    ``lr_schedule`` shapes the learning rate over that budget (lr_scheduler).
    """

    epochs: int
    batch_size: int
    min_steps: int = 0
    epoch_samples: int = 0
    patience: int = 0
    stop_loss: float = 0.0
    stop_window: int = 100
    stop_min_steps: int = 0
    lr_schedule: str = "constant"

    def epoch_length(self, n: int) -> int:
        """Training samples drawn per epoch from ``n`` labelled items."""
        return max(n, self.epoch_samples)

    def steps_per_epoch(self, n: int) -> int:
        return math.ceil(self.epoch_length(n) / self.batch_size)

    def max_steps(self, n: int) -> int:
        """The most optimizer steps a round on n labelled images trains (early stopping may end it sooner)."""
        return self.max_epochs(n) * self.steps_per_epoch(n)

    def max_epochs(self, n: int) -> int:
        """--epochs, or more when that many passes are fewer than --min_steps steps."""
        return max(self.epochs, math.ceil(self.min_steps / self.steps_per_epoch(n)))

    def converged(self, losses_S: torch.Tensor, steps: int) -> bool:
        """The stopping rule on the per-step training losses so far (``losses_S[:steps]``)."""
        if self.stop_loss <= 0 or steps < max(self.stop_min_steps, self.stop_window, 1):
            return False
        return float(losses_S[steps - self.stop_window:steps].mean()) < self.stop_loss


def fit(model: TrunkHeadModel, images, idx: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
        schedule: Schedule, shuffle_gen: torch.Generator, dropout_gen: torch.Generator,
        validate: Callable[[TrunkHeadModel], float] | None = None, desc: str = "epochs",
        augment: Augmenter | None = None, augment_gen: torch.Generator | None = None,
        after_epoch: Callable[[TrunkHeadModel, int], None] | None = None) -> dict:
    """Train on images[idx] with labels y as ``schedule`` says.

    ``shuffle_gen`` (CPU) orders each epoch; ``dropout_gen`` (on the model's device) draws the masks;
    ``augment`` (with ``augment_gen``, on the device) transforms each training batch, nothing else;
    ``validate(model)`` gives the validation accuracy that early stopping watches; ``after_epoch(model,
    steps)``, when given, sees the weights after each epoch (benchmarks read accuracy against steps from
    one run; it must not change the model). Returns the last
    epoch's mean loss, the epochs and steps run, and the epoch whose weights were kept.
    """
    n = idx.numel()
    stopper = EarlyStopping(schedule.patience, validate) if schedule.patience > 0 and validate else None
    epochs, per_epoch = schedule.max_epochs(n), schedule.steps_per_epoch(n)
    # The labelled images, normalised once: a batch is then an index slice (the same values as
    # images.batch gives, without converting and normalising the same few images at every step).
    x_n, length = images.batch(idx), schedule.epoch_length(n)
    fmt = training_layout(x_n)
    model.to(memory_format=fmt)
    x_n = x_n.contiguous(memory_format=fmt)
    losses_S = torch.empty(epochs * per_epoch, device=idx.device)  # per-step losses, on the device
    step = Step(optimizer, lr_scheduler(optimizer, schedule.lr_schedule, epochs * per_epoch),
                (lambda x_B: augment(x_B, augment_gen)) if augment else None)
    steps, epoch = 0, 0
    for epoch in tqdm(range(1, epochs + 1), desc=desc, leave=False, disable=not sys.stderr.isatty(),
                      mininterval=0.5):
        order = epoch_order(n, length, shuffle_gen).to(idx.device)
        train_epoch(model, x_n[order], y[order], step, schedule.batch_size, dropout_gen,
                    losses_S[steps:steps + per_epoch])
        steps += per_epoch
        if after_epoch is not None:
            after_epoch(model, steps)
        if stopper and stopper.should_stop(model, epoch):
            break
        if schedule.converged(losses_S, steps):
            break
    model.to(memory_format=torch.contiguous_format)  # inference and the saved weights stay NCHW
    kept = stopper.restore_best(model) if stopper else epoch
    recalibrate_batchnorm(model, images, idx, schedule.batch_size)
    return {"loss": epoch_mean_loss(losses_S[steps - per_epoch:steps], length, schedule.batch_size),
            "epochs": epoch, "steps": steps, "kept_epoch": kept}


def training_layout(x: torch.Tensor) -> torch.memory_format:
    """The memory format a round trains in: channels_last for image batches on the CPU, else NCHW.

    On the CPU, oneDNN's convolutions and max-pooling run natively in NHWC; with NCHW the pooling
    kernel alone took ~22% of a LeNet step. Measured by bench/bench_train_step.py (1 thread, batch
    64): lenet 1.38×, cnn 1.14×, resnet18 1.10× faster a step. Training only: fit puts the model
    back in NCHW, so inference (models/lenet.py's blocked oneDNN path) and saved weights are as before.
    The result is deterministic like NCHW, but its last bits differ (other summation order).
    """
    return torch.channels_last if x.dim() == 4 and x.device.type == "cpu" else torch.contiguous_format


def epoch_mean_loss(losses_B: torch.Tensor, length: int, batch_size: int) -> float:
    """One epoch's mean loss per sample from its per-batch mean losses (the last batch may be short)."""
    sizes_B = torch.full((losses_B.numel(),), float(batch_size), device=losses_B.device)
    sizes_B[-1] = length - batch_size * (losses_B.numel() - 1)
    return float((losses_B * sizes_B).sum()) / length  # one device sync per round


def epoch_order(n: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """``length`` positions into n items: whole random permutations, the last one cut short."""
    if length <= n:
        return torch.randperm(n, generator=generator)[:length]
    perms = [torch.randperm(n, generator=generator) for _ in range(math.ceil(length / n))]
    return torch.cat(perms)[:length]


@dataclass(frozen=True)
class Step:
    """What one optimizer step does besides the gradient: the learning rate's schedule (stepped after
    each update) and the batch's augmentation (x_B → augmented x_B), when there are any."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None


def lr_scheduler(optimizer: torch.optim.Optimizer, name: str,
                 total_steps: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    """--lr_schedule over ``total_steps`` optimizer steps: None for constant; cosine annealing from the
    optimizer's lr to 0; one-cycle (Smith & Topin 2017, arXiv 1708.07120) peaking at the optimizer's lr."""
    if name == "constant":
        return None
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    if name == "onecycle":
        peak = optimizer.param_groups[0]["lr"]
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peak, total_steps=total_steps)
    raise ValueError(f"unknown learning-rate schedule {name!r}")


def train_epoch(model: TrunkHeadModel, x_E: torch.Tensor, y_E: torch.Tensor, step: Step, batch_size: int,
                dropout_gen: torch.Generator, losses_B: torch.Tensor) -> None:
    """One pass over the normalised images x_E in order, in batches; each batch's mean loss goes into
    ``losses_B`` on the device (no sync here: with --min_steps a tiny labelled set runs ~1000 one-step
    epochs)."""
    model.train()
    for b, start in enumerate(range(0, x_E.shape[0], batch_size)):
        x_B = x_E[start:start + batch_size]
        if step.augment is not None:
            x_B = step.augment(x_B)
        loss = F.cross_entropy(model(x_B, dropout_gen), y_E[start:start + batch_size])
        step.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        step.optimizer.step()
        if step.scheduler is not None:
            step.scheduler.step()
        losses_B[b] = loss.detach()


@torch.no_grad()
def warm_start(model: torch.nn.Module, previous: dict, how: str, shrink: float, perturb: float) -> None:
    """Start a freshly initialised ``model`` from the previous round's trained state dict.

    continue: the previous weights as they are. shrink_perturb (Ash & Adams 2020, arXiv 1910.08475):
    every parameter becomes shrink × previous + perturb × its fresh initial value. Buffers (BatchNorm
    statistics) are the previous ones either way; fit recalibrates them after training.
    """
    if how not in ("continue", "shrink_perturb"):
        raise ValueError(f"unknown warm start {how!r}")
    fresh = model.state_dict()
    parameters = {name for name, _ in model.named_parameters()}
    start = {name: (shrink * value.to(fresh[name].device) + perturb * fresh[name]
                    if how == "shrink_perturb" and name in parameters else value)
             for name, value in previous.items()}
    model.load_state_dict(start)


class EarlyStopping:
    """Stops after ``patience`` epochs without a higher validation accuracy; keeps the best weights."""

    def __init__(self, patience: int, validate: Callable[[TrunkHeadModel], float]):
        self.patience, self.validate = patience, validate
        self.best_acc, self.best_epoch, self.best_state = -1.0, 0, None

    def should_stop(self, model: TrunkHeadModel, epoch: int) -> bool:
        acc = self.validate(model)
        if acc > self.best_acc:
            self.best_acc, self.best_epoch = acc, epoch
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return epoch - self.best_epoch >= self.patience

    def restore_best(self, model: TrunkHeadModel) -> int:
        model.load_state_dict(self.best_state)
        return self.best_epoch


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
def evaluate(model: TrunkHeadModel, images, idx: torch.Tensor, y: torch.Tensor, chunk: int,
             noisy: torch.Tensor | None = None) -> dict:
    """Accuracy and mean cross-entropy of the deterministic (dropout-off) model on images[idx], and
    ``member_acc``: an Ensemble's members' mean accuracy, from the same pass (a single model: its acc).

    With ``noisy`` (a bool per entry of idx: whether that image carries input noise), also ``acc_clean``
    and ``acc_noisy``: the accuracy on each part, from the same predictions (NaN for an empty part).
    """
    model.eval()
    ensemble = isinstance(model, Ensemble)
    hits_n = torch.zeros(idx.numel(), dtype=torch.bool, device=idx.device) if noisy is not None else None
    correct = torch.zeros((), device=idx.device)
    member_correct = torch.zeros((), device=idx.device)
    loss = torch.zeros((), device=idx.device)
    for start in range(0, idx.numel(), chunk):
        x = images.batch(idx[start:start + chunk])
        target = y[start:start + chunk]
        if ensemble:  # what Ensemble.forward computes, with the members' predictions kept
            members_M_n_C = model.member_log_probs(x)
            logits = Ensemble.mean_log_probs(members_M_n_C)
            member_correct += (members_M_n_C.argmax(2) == target).sum()
        else:
            logits = model(x)
        hits = logits.argmax(1) == target
        correct += hits.sum()
        if hits_n is not None:
            hits_n[start:start + chunk] = hits
        loss += F.cross_entropy(logits, target, reduction="sum")
    n = max(idx.numel(), 1)
    acc = float(correct) / n
    metrics = {"acc": acc, "loss": float(loss) / n,
               "member_acc": float(member_correct) / n / len(model) if ensemble else acc}
    if hits_n is not None:
        noisy = noisy.to(hits_n.device)
        for part, mask in (("acc_clean", ~noisy), ("acc_noisy", noisy)):
            count = int(mask.sum())
            metrics[part] = int(hits_n[mask].sum()) / count if count else math.nan
    return metrics


@torch.inference_mode()
def log_probs_chunks(model: TrunkHeadModel, images, idx: torch.Tensor, k: int, mc: bool,
                     generator: torch.Generator, chunk: int) -> Iterator[torch.Tensor]:
    """log_probs_K_n_C for consecutive chunks of images[idx] (memory bounded by ``chunk``).

    With ``mc``, K dropout samples of the head over one trunk pass (an Ensemble: its K = M members'
    predictions); otherwise K=1, dropout off. With
    many samples a chunk has fewer than ``chunk`` rows (memory.mc_chunk_rows), so that its K × rows
    temporaries stay within memory.MC_CHUNK_BYTES whatever K is; the scores do not depend on the chunking.
    """
    model.eval()
    # One set of K masks for the whole pool: chunking changes neither the scores nor their consistency.
    # An ensemble's K predictions are its members' (no masks; M × chunk × C outputs, like evaluation's).
    sampled = mc and not isinstance(model, Ensemble)
    masks = model.head.draw_masks(k, generator, idx.device) if sampled else None
    rows = mc_chunk_rows(model.head, k, chunk) if sampled else chunk
    for start in range(0, idx.numel(), rows):
        x = images.batch(idx[start:start + rows])
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


@torch.inference_mode()
def pool_embeddings(model: TrunkHeadModel, images, idx: torch.Tensor, chunk: int) -> tuple:
    """(h_N_D float32, p_N_C) of images[idx]: one deterministic pass (eval mode, dropout off) in chunks.

    h is the input of the head's last Linear layer (the trunk's features for a one-layer head, else
    the last hidden activation) and p the softmax of the logits from that same pass. Both stay on
    the images' device. An empty ``idx`` gives 0 × D and 0 × C.
    """
    model.eval()
    last = model.head.linears[-1]
    n = idx.numel()
    h_N_D = torch.empty(n, last.in_features, dtype=torch.float32, device=idx.device)
    p_N_C = torch.empty(n, last.out_features, dtype=torch.float32, device=idx.device)
    for start in range(0, n, chunk):
        h = model.head.penultimate(model.trunk(images.batch(idx[start:start + chunk])))
        h_N_D[start:start + h.shape[0]] = h
        p_N_C[start:start + h.shape[0]] = torch.softmax(last(h), dim=-1)
    return h_N_D, p_N_C
