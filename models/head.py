"""The stochastic classifier head and the trunk + head model that MC dropout samples.

MC dropout only samples the head: the trunk is deterministic (no dropout in it), so computing it
once per image and sampling the head K times gives exactly the same distribution as K full passes.
"""
from __future__ import annotations

import torch
from torch import nn


class DropoutHead(nn.Module):
    """Linear layers with dropout before each: dims = [in, hidden..., classes], ReLU between."""

    def __init__(self, dims: list, p: float):
        super().__init__()
        self.p = p
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, h_N_D: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Logits; dropout (one mask per item) only in training mode."""
        if self.training and self.p > 0 and generator is None:
            raise ValueError("training-mode dropout needs an explicit generator")
        x = h_N_D
        for i, lin in enumerate(self.linears):
            if self.training and self.p > 0:
                keep = torch.rand(x.shape, generator=generator, device=x.device) >= self.p
                x = x * keep / (1.0 - self.p)
            x = lin(x)
            if i < len(self.linears) - 1:
                x = torch.relu(x)
        return x

    def sample(self, h_N_D: torch.Tensor, k: int, generator: torch.Generator | None = None,
               masks: list | None = None) -> torch.Tensor:
        """Logits K×N×C under K dropout masks, each mask shared by all N items.

        Shared ("consistent") masks are what BatchBALD needs, and they let a mask be folded into the
        weights: (h ⊙ m) Wᵀ = h (W ⊙ m)ᵀ, so the first layer is one N×D by D×(K·O) matmul.
        Pass ``masks`` (from draw_masks) to score a pool chunk by chunk under the same K masks;
        otherwise they are drawn here from ``generator``. The train/eval mode is ignored: sampling is
        explicit, and dropout is always on here.
        """
        if masks is None and generator is None and self.p > 0:
            raise ValueError("MC dropout needs an explicit generator or pre-drawn masks")
        masks = masks if masks is not None else self.draw_masks(k, generator, h_N_D.device)
        first, rest = self.linears[0], self.linears[1:]
        w_K_O_D = first.weight.unsqueeze(0) * masks[0].unsqueeze(1)
        n, o = h_N_D.shape[0], first.out_features
        x = (h_N_D @ w_K_O_D.reshape(k * o, -1).T).view(n, k, o).transpose(0, 1) + first.bias
        for lin, m_K_D in zip(rest, masks[1:]):
            w_K_O_D = lin.weight.unsqueeze(0) * m_K_D.unsqueeze(1)
            x = torch.baddbmm(lin.bias.view(1, 1, -1), torch.relu(x), w_K_O_D.transpose(1, 2))
        return x

    def draw_masks(self, k: int, generator: torch.Generator | None, device) -> list:
        """K inverted-dropout masks per linear layer (K×D_in, scaled by 1/(1-p)), first layer first."""
        return [self._mask(k, lin.in_features, generator, device) for lin in self.linears]

    def _mask(self, k: int, d: int, generator: torch.Generator | None, device) -> torch.Tensor:
        if self.p == 0:
            return torch.ones(k, d, device=device)
        keep = torch.rand(k, d, generator=generator, device=device) >= self.p
        return keep.float() / (1.0 - self.p)


class TrunkHeadModel(nn.Module):
    """A classifier split into a deterministic trunk (features) and a DropoutHead."""

    def __init__(self, trunk: nn.Module, head: DropoutHead):
        super().__init__()
        self.trunk = trunk
        self.head = head

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.head(self.trunk(x), generator)

    @torch.no_grad()
    def mc_logits(self, x: torch.Tensor, k: int, generator: torch.Generator | None = None,
                  masks: list | None = None) -> torch.Tensor:
        """Logits K×N×C: trunk once in eval mode (BatchNorm frozen), head sampled K times."""
        was_training = self.training
        self.eval()
        try:
            return self.head.sample(self.trunk(x), k, generator, masks)
        finally:
            self.train(was_training)
