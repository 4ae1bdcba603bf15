"""Acquisition scores as pure functions of log-probabilities. Higher score = more worth labelling.

Axis order everywhere: log_probs_K_N_C = K MC dropout samples × N pool items × C classes.
Work in log space and never take log(0): a saturated softmax has log-probabilities of -inf or very
negative numbers, and 0 · log 0 is treated as 0, so no score is ever NaN.
"""
from __future__ import annotations

import math

import torch


def entropy_of(log_probs_N_C: torch.Tensor) -> torch.Tensor:
    """H[p] = -Σ_c p_c log p_c per row, with 0 · log 0 = 0."""
    p = log_probs_N_C.exp()
    return -(p * log_probs_N_C.nan_to_num(neginf=0.0)).sum(-1)


def mean_log_probs(log_probs_K_N_C: torch.Tensor) -> torch.Tensor:
    """log of the MC-averaged predictive, log (1/K Σ_k p_k), computed stably."""
    return torch.logsumexp(log_probs_K_N_C, dim=0) - math.log(log_probs_K_N_C.shape[0])


def max_entropy(log_probs_K_N_C: torch.Tensor) -> torch.Tensor:
    """Predictive entropy H[mean_k p_k] (Shannon 1948; as used by Gal et al. 2017, arXiv 1703.02910)."""
    return entropy_of(mean_log_probs(log_probs_K_N_C))


def bald(log_probs_K_N_C: torch.Tensor) -> torch.Tensor:
    """Mutual information I[y; w] = H[mean_k p_k] - mean_k H[p_k] ≥ 0.

    Houlsby et al. 2011 (arXiv 1112.5745); Gal et al. 2017 (arXiv 1703.02910). It is 0 when all MC
    samples agree and grows with their disagreement. Tiny negative round-off is clamped to 0.
    """
    expected_entropy_N = entropy_of(log_probs_K_N_C).mean(0)
    return (max_entropy(log_probs_K_N_C) - expected_entropy_N).clamp_min(0.0)


def random_scores(n: int, generator: torch.Generator) -> torch.Tensor:
    """I.i.d. uniform scores: their top-k is a uniformly random k-subset."""
    return torch.rand(n, generator=generator)
