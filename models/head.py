"""The stochastic classifier head and the trunk + head model that MC dropout samples.

MC dropout only samples the head: the trunk is deterministic (no dropout in it), so computing it
once per image and sampling the head K times gives exactly the same distribution as K full passes.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

# Bound on the one large temporary of DropoutHead.sample per layer (masked weights or masked inputs):
# the K samples are processed in groups small enough to stay under it.
SAMPLE_TEMP_BYTES = 64 * 2**20


def sample_plan(k: int, n: int, out_features: int, in_features: int, itemsize: int = 4,
                bound: int | None = None) -> tuple:
    """(fold, group) for one layer of DropoutHead.sample over n rows and K masks.

    fold: put the masks into the weights (K·O·D temporary) when O ≤ n, else into the inputs (K·n·D);
    both are exact. group: how many of the K samples one step handles so that its temporary,
    group·min(O, n)·D elements, stays within ``bound`` bytes (SAMPLE_TEMP_BYTES); at least 1.
    """
    bound = SAMPLE_TEMP_BYTES if bound is None else bound
    fold = out_features <= n
    per_sample = min(out_features, n) * in_features * itemsize
    return fold, max(1, min(k, bound // max(per_sample, 1)))


class DropoutHead(nn.Module):
    """Linear layers with dropout before each: dims = [in, hidden..., classes], ReLU between.

    ``p`` is one dropout rate for every layer, or a sequence of rates, one per linear layer (the
    dropout before that layer); ``rates`` always holds the per-layer tuple. A rate of 0 leaves that
    layer's input alone (and draws no random numbers for it).
    """

    def __init__(self, dims: list, p: float | Sequence[float]):
        super().__init__()
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        if isinstance(p, (int, float)):
            rates = (float(p),) * len(self.linears)
        else:
            rates = tuple(float(r) for r in p)
            if len(rates) != len(self.linears):
                raise ValueError(f"{len(rates)} dropout rates for {len(self.linears)} linear layers")
        if not all(0.0 <= r < 1.0 for r in rates):
            raise ValueError(f"dropout rates must be in [0, 1), got {rates}")
        self.rates = rates

    @property
    def p(self) -> float | tuple:
        """The dropout rate shared by all layers, or the per-layer tuple when they differ."""
        return self.rates[0] if len(set(self.rates)) == 1 else self.rates

    def forward(self, h_N_D: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Logits; dropout (one mask per item) only in training mode."""
        dropping = self.training and any(r > 0 for r in self.rates)
        if dropping and generator is None:
            raise ValueError("training-mode dropout needs an explicit generator")
        x = h_N_D
        for i, (lin, p) in enumerate(zip(self.linears, self.rates)):
            if dropping and p > 0:
                keep = torch.rand(x.shape, generator=generator, device=x.device) >= p
                x = x * keep / (1.0 - p)
            x = lin(x)
            if i < len(self.linears) - 1:
                x = torch.relu(x)
        return x

    def penultimate(self, h_N_D: torch.Tensor) -> torch.Tensor:
        """The input of the last Linear layer with dropout off: the hidden activation after the last
        ReLU, or h_N_D itself for a single-layer head. ``linears[-1](penultimate(h))`` is the eval-mode
        forward."""
        x = h_N_D
        for lin in self.linears[:-1]:
            x = torch.relu(lin(x))
        return x

    def sample(self, h_N_D: torch.Tensor, k: int, generator: torch.Generator | None = None,
               masks: list | None = None) -> torch.Tensor:
        """Logits K×N×C under K dropout masks, each mask shared by all N items.

        Shared ("consistent") masks are what BatchBALD needs. Pass ``masks`` (from draw_masks) to
        score a pool chunk by chunk under the same K masks; otherwise they are drawn here from
        ``generator``. The train/eval mode is ignored: sampling is explicit, and dropout is always on.

        Each layer takes the cheaper of two exact forms (sample_plan): with few output units
        (O ≤ N) the masks are folded into the weights, (x ⊙ m) Wᵀ = x (W ⊙ m)ᵀ, a K·O·D temporary;
        otherwise the inputs are masked, a K·N·D temporary, and one matmul with W serves all K.
        Either way the K samples go in groups that keep that temporary under SAMPLE_TEMP_BYTES.
        """
        if masks is None and generator is None and any(r > 0 for r in self.rates):
            raise ValueError("MC dropout needs an explicit generator or pre-drawn masks")
        masks = masks if masks is not None else self.draw_masks(k, generator, h_N_D.device)
        n = h_N_D.shape[0]
        x = h_N_D  # N×D for the first layer (shared by all K), then K×N×D
        for i, (lin, m_K_D) in enumerate(zip(self.linears, masks)):
            w_O_D, b_O = lin.weight, lin.bias
            o, d = w_O_D.shape
            fold, group = sample_plan(k, n, o, d, w_O_D.element_size())
            y = torch.empty(k, n, o, dtype=w_O_D.dtype, device=h_N_D.device)
            for a in range(0, k, group):
                z = min(a + group, k)
                m_g_D = m_K_D[a:z]
                if i == 0 and fold:  # one N×D by D×(g·O) matmul
                    w_gO_D = (w_O_D.unsqueeze(0) * m_g_D.unsqueeze(1)).reshape(-1, d)
                    y[a:z] = (x @ w_gO_D.T).view(n, z - a, o).transpose(0, 1) + b_O
                elif fold:  # batched over the group: g × (N×D by D×O)
                    w_g_O_D = w_O_D.unsqueeze(0) * m_g_D.unsqueeze(1)
                    y[a:z] = torch.baddbmm(b_O.view(1, 1, -1), x[a:z], w_g_O_D.transpose(1, 2))
                else:  # masked inputs, one (g·N)×D by D×O matmul
                    x_g_N_D = (x if i == 0 else x[a:z]) * m_g_D.unsqueeze(1)
                    y[a:z] = torch.addmm(b_O, x_g_N_D.reshape(-1, d), w_O_D.T).view(z - a, n, o)
            # ReLU in place on this function's own buffer (the ops above do not keep their outputs
            # for backward, so this is safe with autograd too)
            x = y.relu_() if i < len(self.linears) - 1 else y
        return x

    def mask_bytes(self, k: int, itemsize: int = 4) -> int:
        """Bytes of the K masks that draw_masks returns: K × in_features per linear layer."""
        return k * sum(lin.in_features for lin in self.linears) * itemsize

    def sample_row_bytes(self, k: int, itemsize: int = 4) -> int:
        """Bytes that sample() holds per input row, beyond the masks and its SAMPLE_TEMP_BYTES groups.

        A layer's K×n×O output, the previous layer's (still alive while it is computed) and, in the
        folded first layer, the n×(K·O) matmul result before it is transposed into place: counted as
        three K×O buffers per layer, an upper bound on what is alive at once.
        """
        return 3 * k * sum(lin.out_features for lin in self.linears) * itemsize

    def draw_masks(self, k: int, generator: torch.Generator | None, device) -> list:
        """K inverted-dropout masks per linear layer (K×D_in, scaled by 1/(1-p)), first layer first."""
        return [self._mask(k, lin.in_features, p, generator, device) for lin, p in zip(self.linears, self.rates)]

    @staticmethod
    def _mask(k: int, d: int, p: float, generator: torch.Generator | None, device) -> torch.Tensor:
        if p == 0:
            return torch.ones(k, d, device=device)
        keep = torch.rand(k, d, generator=generator, device=device) >= p
        return keep.float() / (1.0 - p)


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
