"""The one selector every strategy shares: the top-k scores."""
from __future__ import annotations

import torch


def select_top_k(scores_N: torch.Tensor, k: int) -> torch.Tensor:
    """Positions (into scores_N) of the k highest scores, best first. NaN is an error, not a rank."""
    if torch.isnan(scores_N).any():
        raise ValueError(f"{int(torch.isnan(scores_N).sum())} acquisition scores are NaN")
    if not 0 < k <= scores_N.numel():
        raise ValueError(f"cannot select {k} of {scores_N.numel()} items")
    return torch.topk(scores_N, k, sorted=True).indices
