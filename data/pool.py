"""PoolState: which pool items are labelled, in which round, and with which revealed label."""
from __future__ import annotations

import torch


class PoolState:
    """Labelling status of the unlabelled pool, by pool position (0..n_pool-1).

    ``round_P[p]`` is the first training round that uses item p (0 for the initial set, r + 1 for an
    item queried after round r; -1 while unlabelled); ``label_P[p]`` is the label the oracle revealed.

    Revealed labels are stored here rather than read from the dataset, so that an oracle which
    lies (label noise) changes what the model trains on and nothing else.

    ``aside_P[p]`` marks items taken out of the pool without a label (a person answered "I don't
    know" with --dont_know out): neither labelled nor candidates for a query.
    """

    def __init__(self, n_pool: int):
        self.round_P = torch.full((n_pool,), -1, dtype=torch.int64)
        self.label_P = torch.full((n_pool,), -1, dtype=torch.int64)
        self.aside_P = torch.zeros(n_pool, dtype=torch.bool)

    def __len__(self) -> int:
        return self.round_P.numel()

    @property
    def n_labeled(self) -> int:
        return int((self.round_P >= 0).sum())

    def labeled_positions(self) -> torch.Tensor:
        return torch.nonzero(self.round_P >= 0).flatten()

    def unlabeled_positions(self) -> torch.Tensor:
        """Positions a query may choose: unlabelled and not set aside."""
        return torch.nonzero((self.round_P < 0) & ~self.aside_P).flatten()

    @property
    def n_aside(self) -> int:
        return int(self.aside_P.sum())

    def set_aside(self, positions: torch.Tensor) -> None:
        """Take unlabelled pool positions out of the pool (they are never queried again)."""
        positions = torch.as_tensor(positions, dtype=torch.int64)
        if (self.round_P[positions] >= 0).any():
            raise ValueError("a labelled pool item cannot be set aside")
        self.aside_P[positions] = True

    def bring_back(self, positions: torch.Tensor) -> None:
        """Undo set_aside (an "I don't know" image a person labels later, from the review)."""
        self.aside_P[torch.as_tensor(positions, dtype=torch.int64)] = False

    def labels_of(self, positions: torch.Tensor) -> torch.Tensor:
        return self.label_P[positions]

    def label(self, positions: torch.Tensor, labels: torch.Tensor, round_: int) -> None:
        """Mark pool positions as labelled in ``round_`` with the oracle's ``labels``."""
        positions = torch.as_tensor(positions, dtype=torch.int64)
        if positions.unique().numel() != positions.numel():
            raise ValueError("the same pool item was selected twice")
        if (self.round_P[positions] >= 0).any():
            raise ValueError("a selected pool item is already labelled")
        self.round_P[positions] = round_
        self.label_P[positions] = torch.as_tensor(labels, dtype=torch.int64)

    def relabel(self, positions: torch.Tensor, labels: torch.Tensor) -> None:
        """Give labelled pool positions another label (an oracle's correction); their round stays."""
        positions = torch.as_tensor(positions, dtype=torch.int64)
        if (self.round_P[positions] < 0).any():
            raise ValueError("only a labelled pool item can be relabelled")
        self.label_P[positions] = torch.as_tensor(labels, dtype=torch.int64)

    def copy(self) -> "PoolState":
        """An independent copy (what a round trains on while the live state takes the next answers)."""
        copied = PoolState(0)
        copied.load_state_dict(self.state_dict())
        return copied

    def state_dict(self) -> dict:
        return {"round_P": self.round_P.clone(), "label_P": self.label_P.clone(), "aside_P": self.aside_P.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.round_P = state["round_P"].clone()
        self.label_P = state["label_P"].clone()
        self.aside_P = state.get("aside_P", torch.zeros_like(self.round_P, dtype=torch.bool)).clone()
