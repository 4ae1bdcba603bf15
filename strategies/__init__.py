"""Strategy registry: plain dict from CLI name to a Strategy declaration.

A strategy never touches the model, the data or the loop. It declares what it needs, and the loop
provides it: ``score`` maps log_probs_K_N_C to scores_N, whose top-k the loop takes;
``select_batch`` instead picks the whole batch itself from log_probs_K_N_C (for strategies whose items
interact, like BatchBALD); ``select_embeddings`` picks the whole batch from one deterministic pass's
penultimate features and probabilities (an ``Embeddings``: the diversity strategies coreset, badge,
typiclust); with none of them, no predictions are needed and the batch is uniformly random.
``mc`` says whether the K predictions are MC dropout samples. ``min_mc_samples`` is the fewest samples
for which the choice is meaningful: 2 for the disagreement scores (bald, batchbald, var_ratios, mean_std
are constant with one sample), 1 for scores of the MC-averaged prediction (entropy, margin,
least_confidence).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from strategies.batchbald import batchbald_select
from strategies.diversity import Embeddings, badge_select, coreset_select, typiclust_select
from strategies.scores import (bald, entropy_of, least_confidence, margin, max_entropy, mean_log_probs,
                               mean_std, random_scores, var_ratios)
from strategies.select import select_top_k


@dataclass(frozen=True)
class Strategy:
    name: str
    score: Optional[Callable[[torch.Tensor], torch.Tensor]]  # log_probs_K_N_C -> scores_N
    mc: bool  # needs K MC dropout samples; False: one deterministic pass (or none)
    min_mc_samples: int = 1
    # (log_probs_K_N_C, batch_size, generator) -> (positions_B, scores_B), positions into N in pick order
    select_batch: Optional[Callable] = None
    # (Embeddings, batch_size, generator) -> (positions_B, scores_B), positions into N in pick order
    select_embeddings: Optional[Callable] = None

    @property
    def needs_predictions(self) -> bool:
        """False for random selection: the loop then needs no model outputs at all."""
        return self.score is not None or self.select_batch is not None or self.select_embeddings is not None

    @property
    def needs_embeddings(self) -> bool:
        """True: the loop passes the deterministic model's penultimate features (and probabilities)."""
        return self.select_embeddings is not None


STRATEGIES = {
    "random": Strategy("random", score=None, mc=False),
    "entropy": Strategy("entropy", score=max_entropy, mc=True),
    "bald": Strategy("bald", score=bald, mc=True, min_mc_samples=2),
    "var_ratios": Strategy("var_ratios", score=var_ratios, mc=True, min_mc_samples=2),
    "mean_std": Strategy("mean_std", score=mean_std, mc=True, min_mc_samples=2),
    "margin": Strategy("margin", score=margin, mc=True),
    "least_confidence": Strategy("least_confidence", score=least_confidence, mc=True),
    "batchbald": Strategy("batchbald", score=None, mc=True, min_mc_samples=2, select_batch=batchbald_select),
    "coreset": Strategy("coreset", score=None, mc=False, select_embeddings=coreset_select),
    "badge": Strategy("badge", score=None, mc=False, select_embeddings=badge_select),
    "typiclust": Strategy("typiclust", score=None, mc=False, select_embeddings=typiclust_select),
}


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of: {', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[name]


__all__ = ["STRATEGIES", "Embeddings", "Strategy", "badge_select", "bald", "batchbald_select", "coreset_select", "entropy_of", "get_strategy",
           "least_confidence", "margin", "max_entropy", "mean_log_probs", "mean_std", "random_scores",
           "select_top_k", "typiclust_select", "var_ratios"]
