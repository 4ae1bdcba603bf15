"""Strategy registry: plain dict from CLI name to a Strategy declaration.

A strategy never touches the model, the data or the loop. It declares its ``kind``, which says what
the loop provides and what the strategy does with it; the one callable of that kind is set, no other:
- "score": ``score`` maps log_probs_K_N_C to scores_N, whose top-k the loop takes;
- "batch": ``select_batch`` picks the whole batch itself from log_probs_K_N_C (for strategies whose
  items interact, like BatchBALD);
- "targets": ``score_targets`` maps log_probs_K_N_C and the K predictions of T target inputs,
  log_probs_K_T_C, drawn by the loop with the same K samples of the model (paired rows), to scores_N
  (EPIG: information about the predictions on the targets);
- "embeddings": ``select_embeddings`` picks the whole batch from one deterministic pass's penultimate
  features and probabilities (an ``Embeddings``: the diversity strategies coreset, badge, typiclust);
- "random": no callable and no predictions at all; the batch is uniformly random.
``mc`` says whether the K predictions are MC dropout samples. ``min_mc_samples`` is the fewest samples
for which the choice is meaningful: 2 for the disagreement scores (bald, batchbald, var_ratios, mean_std
and epig are constant with one sample), 1 for scores of the MC-averaged prediction (entropy, margin,
least_confidence).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from strategies.batchbald import batchbald_select
from strategies.diversity import Embeddings, badge_select, coreset_select, typiclust_select
from strategies.epig import epig
from strategies.probcover import probcover_select
from strategies.scores import (bald, entropy_of, least_confidence, margin, max_entropy, mean_log_probs,
                               mean_std, random_scores, var_ratios)
from strategies.select import select_stochastic, select_top_k


# Each kind and the one callable it uses (None: the kind uses none).
KINDS = {"random": None, "score": "score", "batch": "select_batch", "embeddings": "select_embeddings",
         "targets": "score_targets"}
CALLABLES = tuple(c for c in KINDS.values() if c)


@dataclass(frozen=True)
class Strategy:
    name: str
    kind: str  # one of KINDS: how the loop queries with this strategy
    mc: bool  # needs K MC dropout samples; False: one deterministic pass (or none)
    min_mc_samples: int = 1
    negative_scores: bool = False  # scores below 0 by definition (margin): no --acquisition power
    features_only: bool = False  # an embeddings strategy that reads only the features (--embedding self_supervised)
    score: Optional[Callable[[torch.Tensor], torch.Tensor]] = None  # log_probs_K_N_C -> scores_N
    # (log_probs_K_N_C, batch_size, generator) -> (positions_B, scores_B), positions into N in pick order
    select_batch: Optional[Callable] = None
    # (Embeddings, batch_size, generator) -> (positions_B, scores_B), positions into N in pick order
    select_embeddings: Optional[Callable] = None
    # (log_probs_K_N_C, log_probs_K_T_C) -> scores_N, whose top-k the loop takes
    score_targets: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None

    def __post_init__(self):
        """Refuse a declaration whose callables do not match its kind: exactly the kind's one, or none."""
        if self.kind not in KINDS:
            raise ValueError(f"strategy {self.name!r}: unknown kind {self.kind!r}; choose one of: "
                             f"{', '.join(KINDS)}")
        given = [f for f in CALLABLES if getattr(self, f) is not None]
        expected = [KINDS[self.kind]] if KINDS[self.kind] else []
        if given != expected:
            raise ValueError(f"strategy {self.name!r} of kind {self.kind!r} must set "
                             f"{' '.join(expected) or 'no callable'}, got {', '.join(given) or 'none'}")

    @property
    def needs_predictions(self) -> bool:
        """False for random selection: the loop then needs no model outputs at all."""
        return self.kind != "random"

    @property
    def scores_items(self) -> bool:
        """True: the strategy scores each candidate and the loop chooses from the scores (--acquisition)."""
        return self.kind in ("score", "targets")

    @property
    def needs_embeddings(self) -> bool:
        """True: the loop passes the deterministic model's penultimate features (and probabilities)."""
        return self.kind == "embeddings"


STRATEGIES = {
    "random": Strategy("random", "random", mc=False),
    "entropy": Strategy("entropy", "score", mc=True, score=max_entropy),
    "bald": Strategy("bald", "score", mc=True, min_mc_samples=2, score=bald),
    "var_ratios": Strategy("var_ratios", "score", mc=True, min_mc_samples=2, score=var_ratios),
    "mean_std": Strategy("mean_std", "score", mc=True, min_mc_samples=2, score=mean_std),
    "margin": Strategy("margin", "score", mc=True, score=margin, negative_scores=True),
    "least_confidence": Strategy("least_confidence", "score", mc=True, score=least_confidence),
    "batchbald": Strategy("batchbald", "batch", mc=True, min_mc_samples=2, select_batch=batchbald_select),
    "epig": Strategy("epig", "targets", mc=True, min_mc_samples=2, score_targets=epig),
    "coreset": Strategy("coreset", "embeddings", mc=False, select_embeddings=coreset_select, features_only=True),
    "badge": Strategy("badge", "embeddings", mc=False, select_embeddings=badge_select),
    "typiclust": Strategy("typiclust", "embeddings", mc=False, select_embeddings=typiclust_select, features_only=True),
    "probcover": Strategy("probcover", "embeddings", mc=False, select_embeddings=probcover_select, features_only=True),
}


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of: {', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[name]


__all__ = ["CALLABLES", "KINDS", "STRATEGIES", "Embeddings", "Strategy", "badge_select", "bald", "batchbald_select",
           "coreset_select", "entropy_of", "epig", "get_strategy",
           "least_confidence", "margin", "max_entropy", "mean_log_probs", "mean_std", "random_scores",
           "probcover_select", "select_stochastic", "select_top_k", "typiclust_select", "var_ratios"]
