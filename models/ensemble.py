"""A deep ensemble (Beluch et al., CVPR 2018): M independently initialised networks whose predictions
take the place of the K MC dropout samples.

Each member is an ordinary TrunkHeadModel, trained on its own (loop.train_model). At inference the
members run in eval mode (BatchNorm frozen, dropout off): the K×N×C "samples" every score reads are the
M members' predictions, so bald, entropy, batchbald … work unchanged. The ensemble's own prediction,
which evaluation reports, is the mean of the members' probabilities.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from models.head import TrunkHeadModel


class Ensemble(nn.Module):
    """M TrunkHeadModels. ``forward`` gives the log of the members' mean probability (log-probabilities
    are valid logits: softmax and cross-entropy read them as the mean prediction's)."""

    def __init__(self, members: list):
        super().__init__()
        if not members or not all(isinstance(m, TrunkHeadModel) for m in members):
            raise ValueError("an ensemble needs at least one TrunkHeadModel")
        self.members = nn.ModuleList(members)

    def __len__(self) -> int:
        return len(self.members)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.training:
            raise RuntimeError("an ensemble is trained member by member, not through its forward")
        return self.mean_log_probs(self.member_log_probs(x))

    @staticmethod
    def mean_log_probs(log_probs_M_N_C: torch.Tensor) -> torch.Tensor:
        """log of the members' mean probability, from their log-probabilities."""
        return torch.logsumexp(log_probs_M_N_C, dim=0) - math.log(log_probs_M_N_C.shape[0])

    def member_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """log_probs_M_N_C: every member's deterministic (eval-mode) prediction."""
        return torch.stack([torch.log_softmax(m(x), dim=-1) for m in self.members])

    @torch.no_grad()
    def mc_logits(self, x: torch.Tensor, k: int, generator: torch.Generator | None = None,
                  masks: list | None = None) -> torch.Tensor:
        """The K = M members' log-probabilities (as logits), in eval mode: what MC dropout's K samples are
        for a single network. ``generator`` and ``masks`` are not used (members are deterministic)."""
        if k != len(self.members):
            raise ValueError(f"an ensemble of {len(self.members)} gives {len(self.members)} predictions, not {k}")
        was_training = self.training
        self.eval()
        try:
            return self.member_log_probs(x)
        finally:
            self.train(was_training)
