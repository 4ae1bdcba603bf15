"""LeNet-5 for 1 or 3 channels and 28 or 32 pixels, with dropout in its classifier head."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.head import DropoutHead, TrunkHeadModel


class LeNetTrunk(nn.Module):
    """conv5(6) – maxpool2 – ReLU – conv5(16) – maxpool2 – ReLU – fc120 – ReLU: deterministic features
    (pooling before ReLU gives the same values as the classic ReLU-then-pool order)."""

    def __init__(self, in_channels: int, image_size: int):
        super().__init__()
        if image_size not in (28, 32):
            raise ValueError(f"lenet takes 28 or 32 pixel images, got {image_size}")
        self.pad = (32 - image_size) // 2  # 28-pixel inputs are padded to LeNet's 32
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=self.pad)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _mkldnn_inference(x):
            return self._forward_mkldnn(x)
        # Pool, then ReLU: the same values (max commutes with a monotone function), with ReLU and its
        # backward on a quarter of the elements.
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2(x), 2))
        return F.relu(self.fc1(x.flatten(1)))

    def _forward_mkldnn(self, x: torch.Tensor) -> torch.Tensor:
        """The same computation (bit-identical here), with the conv block kept in oneDNN's layout.

        Without gradients on the CPU, converting between the dense and the blocked layout around
        every op dominates LeNet's small convolutions; staying blocked from conv1 to the second pool
        makes pool scoring and evaluation ~2.7× faster (bench/bench_round.py).
        """
        y = torch.mkldnn_convolution(x.contiguous().to_mkldnn(), self.conv1.weight.to_mkldnn(),
                                     self.conv1.bias.to_mkldnn(), (self.pad, self.pad), (1, 1), (1, 1), 1)
        y = F.max_pool2d(y, 2).relu_()
        y = torch.mkldnn_convolution(y, self.conv2.weight.to_mkldnn(), self.conv2.bias.to_mkldnn(),
                                     (0, 0), (1, 1), (1, 1), 1)
        y = F.max_pool2d(y, 2).relu_().to_dense()
        return F.relu(self.fc1(y.flatten(1)))


def _mkldnn_inference(x: torch.Tensor) -> bool:
    return (not torch.is_grad_enabled() and x.device.type == "cpu" and x.dtype == torch.float32
            and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)


def lenet(in_channels: int, image_size: int, num_classes: int, dropout: float) -> TrunkHeadModel:
    """LeNetTrunk; head: dropout – fc84 – ReLU – dropout – fc(classes)."""
    return TrunkHeadModel(LeNetTrunk(in_channels, image_size), DropoutHead([120, 84, num_classes], dropout))
