"""Strategy registry: plain dict from CLI name to a Strategy declaration.

A strategy never touches the model, the data or the loop. It declares what it needs, and the loop
provides it: ``score`` maps log_probs_K_N_C to scores_N (None: no predictions needed, scores are
random), and ``mc`` says whether the K predictions are MC dropout samples.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from strategies.scores import bald, entropy_of, max_entropy, mean_log_probs, random_scores
from strategies.select import select_top_k


@dataclass(frozen=True)
class Strategy:
    name: str
    score: Optional[Callable[[torch.Tensor], torch.Tensor]]  # log_probs_K_N_C -> scores_N
    mc: bool  # needs K MC dropout samples; False: one deterministic pass (or none)
    min_mc_samples: int = 1


STRATEGIES = {
    "random": Strategy("random", score=None, mc=False),
    "entropy": Strategy("entropy", score=max_entropy, mc=True),
    "bald": Strategy("bald", score=bald, mc=True, min_mc_samples=2),
}


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of: {', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[name]


__all__ = ["STRATEGIES", "Strategy", "bald", "entropy_of", "get_strategy", "max_entropy",
           "mean_log_probs", "random_scores", "select_top_k"]
