"""Acquisition scores as pure functions of log-probabilities. Higher score = more worth labelling.

Axis order everywhere: log_probs_K_N_C = K MC dropout samples × N pool items × C classes.
Work in log space and never take log(0): a saturated softmax has log-probabilities of -inf or very
negative numbers, and 0 · log 0 is treated as 0, so no score is ever NaN.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


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


def var_ratios(log_probs_K_N_C: torch.Tensor) -> torch.Tensor:
    """Variation ratio 1 - (count of the modal class among the K sampled argmaxes) / K.

    Freeman 1965; Gal et al. 2017 (arXiv 1703.02910). It counts votes, one per MC sample, so it is
    not 1 - max of the mean prediction. In [0, 1 - ⌈K/C⌉/K]: 0 when all samples agree on the argmax.
    A tie within one sample goes to the lowest class index (torch.argmax). An item with a NaN
    log-probability scores NaN (argmax alone would take the NaN for the largest value and vote for it),
    so that selection refuses a diverged model's scores as it does for the other scores.
    """
    k, _, c = log_probs_K_N_C.shape
    votes_K_N_C = F.one_hot(log_probs_K_N_C.argmax(-1), c)
    modal_count_N = votes_K_N_C.sum(0).amax(-1)
    scores_N = 1.0 - modal_count_N.to(log_probs_K_N_C.dtype) / k
    return scores_N.masked_fill_(torch.isnan(log_probs_K_N_C).any(-1).any(0), float("nan"))


def mean_std(log_probs_K_N_C: torch.Tensor) -> torch.Tensor:
    """Mean over classes of the std of p_c over the K samples (population std, divides by K).

    Kampffmeyer et al. 2016; Kendall et al. 2015 (arXiv 1511.02680); as used by Gal et al. 2017
    (arXiv 1703.02910). It is 0 when all MC samples agree.
    """
    return log_probs_K_N_C.exp().std(dim=0, correction=0).mean(-1)


def margin(log_probs_K_N_C: torch.Tensor) -> torch.Tensor:
    """Minus the gap between the top two MC-averaged probabilities, -(p_(1) - p_(2)).

    Scheffer et al. 2001. In [-1, 0]: 0 when the top two classes tie. Needs C ≥ 2.
    """
    top2_N_2 = mean_log_probs(log_probs_K_N_C).exp().topk(2, dim=-1).values
    return top2_N_2[:, 1] - top2_N_2[:, 0]


def least_confidence(log_probs_K_N_C: torch.Tensor) -> torch.Tensor:
    """1 - max_c of the MC-averaged probability, in [0, 1 - 1/C] (Lewis & Gale 1994; Settles 2009)."""
    return 1.0 - mean_log_probs(log_probs_K_N_C).exp().amax(-1)


def random_scores(n: int, generator: torch.Generator) -> torch.Tensor:
    """I.i.d. uniform scores: their top-k is a uniformly random k-subset."""
    return torch.rand(n, generator=generator)
