"""The oracle answers label queries. Labels reach training only through it and the PoolState."""
from __future__ import annotations

import torch


class CleanOracle:
    """Reveals the true label of each queried pool item."""

    def __init__(self, pool_y: torch.Tensor):
        self.pool_y = pool_y.cpu()

    def __call__(self, positions: torch.Tensor) -> torch.Tensor:
        """Labels for pool positions."""
        return self.pool_y[positions]
