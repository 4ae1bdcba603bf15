"""The selectors every score strategy shares: the top-k scores, or a stochastic draw from them.

Stochastic acquisition (Kirsch et al. 2023, "Stochastic Batch Acquisition", arXiv 2106.12059): draw k items
without replacement with probability proportional to score^β (``power``), exp(β·score) (``softmax``) or
rank^-β (``softrank``; rank 1 = the highest score), by Gumbel-top-k: the k largest of log-weight + Gumbel
noise are a draw without replacement in that order. A top-k batch of a per-image score piles up near-
duplicates of one uncertain region; a draw spreads it at no extra cost.
"""
from __future__ import annotations

import torch

from config import ACQUISITIONS


def select_top_k(scores_N: torch.Tensor, k: int) -> torch.Tensor:
    """Positions (into scores_N) of the k highest scores, best first. NaN is an error, not a rank."""
    _check(scores_N, k)
    return torch.topk(scores_N, k, sorted=True).indices


def log_weights(scores_N: torch.Tensor, how: str, beta: float) -> torch.Tensor:
    """log w_N of a stochastic acquisition (unnormalised): β·log score, β·score, or −β·log rank. For power,
    scores below the smallest positive float count as it (zero, or a rounding error's −1e-9 from a score
    that is ≥ 0 in exact arithmetic): drawn after every positive one, never refused. Strategies whose
    scores are negative by definition (margin) are refused power by their declaration."""
    scores = scores_N.double()
    if how == "power":
        return beta * scores.clamp_min(torch.finfo(torch.float64).tiny).log()
    if how == "softmax":
        return beta * scores
    if how == "softrank":
        ranks = torch.empty_like(scores)
        ranks[torch.argsort(scores, descending=True, stable=True)] = torch.arange(1, scores.numel() + 1,
                                                                                 dtype=scores.dtype)
        return -beta * ranks.log()
    raise ValueError(f"unknown acquisition {how!r}; choose one of: {', '.join(ACQUISITIONS)}")


def select_stochastic(scores_N: torch.Tensor, k: int, how: str, beta: float,
                      generator: torch.Generator) -> tuple:
    """(positions_k, draw_probs_k): k items drawn without replacement as ``how`` says (Gumbel-top-k, noise
    from ``generator``), in draw order, and the probability with which each was drawn at its turn
    (its weight over the weights of the items not drawn before it)."""
    _check(scores_N, k)
    logw = log_weights(scores_N.cpu(), how, beta)
    u = torch.rand(logw.shape, generator=generator, dtype=torch.float64).clamp_(min=1e-300)
    picked = torch.topk(logw - (-u.log()).log(), k, sorted=True).indices
    # The probability of each pick at its turn: w_i / (Σ w − Σ w of the earlier picks), in log space
    shifted = logw - logw.max()
    w = shifted.exp()
    left = w.sum() - torch.cat([torch.zeros(1, dtype=w.dtype), w[picked].cumsum(0)[:-1]])
    probs = (shifted[picked] - left.clamp_min(torch.finfo(torch.float64).tiny).log()).exp()
    return picked, probs.float()


def _check(scores_N: torch.Tensor, k: int) -> None:
    if torch.isnan(scores_N).any():
        raise ValueError(f"{int(torch.isnan(scores_N).sum())} acquisition scores are NaN")
    if not 0 < k <= scores_N.numel():
        raise ValueError(f"cannot select {k} of {scores_N.numel()} items")


__all__ = ["ACQUISITIONS", "log_weights", "select_stochastic", "select_top_k"]
