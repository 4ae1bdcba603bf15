"""The stopping signal: Cohen's kappa between consecutive rounds' predictions on a fixed set of pool images.

Stabilising predictions (Bloodgood & Vijay-Shanker, CoNLL 2009, "A method for stopping active learning
based on stabilizing predictions and the need for user-adjustable stopping"): once the model's predicted
classes on a fixed set of unlabelled inputs stop changing from one round to the next, more labels stop
paying. The stop set is chosen once per run, with the seed, from the pool's unlabelled images at round 0;
it keeps its images when they are labelled later (the agreement is about the model, not the pool).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.metrics import cohen_kappa_score

from rng import torch_generator


def stop_set_size(n_pool: int, n_initial: int, size: int) -> int:
    """How many images the stop set holds: ``size`` (--stop_set_size), at most all those outside the initial set."""
    return min(size, n_pool - n_initial)


def stop_set_positions(n_pool: int, initial: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """Sorted pool positions of the stop set: stop_set_size of the images not in the initial set, drawn with
    the run's seed alone, so that the same run always has the same set (resume rebuilds it)."""
    free = torch.ones(n_pool, dtype=torch.bool)
    free[initial] = False
    candidates = torch.nonzero(free).flatten()
    chosen = torch.randperm(candidates.numel(), generator=torch_generator(seed, "stop_set"))
    chosen = chosen[:stop_set_size(n_pool, n_pool - candidates.numel(), size)]
    return candidates[chosen].sort().values


def stop_kappa(previous, current) -> float:
    """Cohen's kappa between two rounds' predicted classes (scikit-learn's), NaN without a previous round.

    Identical predictions give 1 even when they are all one class (kappa's chance agreement is then 1
    and scikit-learn gives NaN): a model whose predictions did not change at all has stopped changing.
    """
    if previous is None:
        return math.nan
    a, b = np.asarray(previous), np.asarray(current)
    if np.array_equal(a, b):
        return 1.0
    return float(cohen_kappa_score(a, b))


def reached(kappa: float, threshold: float) -> bool:
    """Whether a round's kappa ends the run under --stop_when_stable ``threshold`` (0 = off; NaN never does)."""
    return threshold > 0 and not math.isnan(kappa) and kappa >= threshold


class StopSignal:
    """The stop set and the previous round's predicted classes on it, carried from round to round."""

    def __init__(self, positions: torch.Tensor):
        self.positions = positions
        self.previous: list | None = None  # the previous round's predicted classes (None: not known)

    @property
    def off(self) -> bool:
        """No stop set (--stop_set_size 0): stop_kappa is not computed."""
        return self.positions.numel() == 0

    def record(self, predictions: torch.Tensor) -> float:
        """This round's kappa against the previous round's predictions; these become the previous ones."""
        current = predictions.tolist()
        kappa = stop_kappa(self.previous, current)
        self.previous = current
        return kappa
