"""Seeded stratified splits: the fixed test hold-outs, validation out of train, and the initial labelled set."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from rng import numpy_rng


@dataclass(frozen=True)
class Splits:
    """Indices into the dataset's train split: validation images and the unlabelled pool."""

    val_idx: torch.Tensor
    pool_idx: torch.Tensor


def split_train(train_y: torch.Tensor, num_valid: int, seed: int) -> Splits:
    """Draw ``num_valid`` validation images stratified by class; the rest of train is the pool."""
    pool, val = stratified_draw(train_y, num_valid, numpy_rng(seed, "validation"))
    return Splits(val_idx=val, pool_idx=pool)


def initial_positions(pool_y: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Pool positions of the initial labelled set: ``n`` images, class-balanced, seeded, among the
    positions with a label (pool_y ≥ 0; unlabelled images, -1, are for a person to label)."""
    labelled = torch.nonzero(pool_y >= 0).flatten()  # all positions (0..N-1) when every image has a label
    if n >= labelled.numel():  # every labelled image (the rest of the pool is for a person to label)
        return labelled
    return labelled[stratified_draw(pool_y[labelled], n, numpy_rng(seed, "initial"))[1]]


def stratified_draw(y: torch.Tensor | np.ndarray, n: int, random_state: int | np.random.RandomState) -> tuple:
    """Split positions 0..len(y)-1 into (rest, drawn) with ``n`` drawn in class proportions.

    ``random_state`` is what scikit-learn takes: a plain int for a split fixed once for a dataset (the
    test hold-outs of mnist_5k and folder), or a run's named stream (``rng.numpy_rng``) for the draws
    that follow the run's seed. Below one item per class on either side, stratification is impossible
    and the draw is plain uniform. Both parts come back sorted (int64 tensors), so they do not depend on
    sklearn's internal ordering.
    """
    y_np = y.cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    n_classes = len(np.unique(y_np))
    stratify = y_np if n >= n_classes and len(y_np) - n >= n_classes else None
    rest, drawn = train_test_split(np.arange(len(y_np)), test_size=n, stratify=stratify,
                                   random_state=random_state)
    return torch.as_tensor(np.sort(rest)), torch.as_tensor(np.sort(drawn))
