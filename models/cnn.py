"""Small MNIST CNNs from the deep Bayesian active learning papers, with MC dropout in their heads."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.head import DropoutHead, TrunkHeadModel


def _valid(size: int, kernel: int) -> int:
    """Side of a 'valid' (unpadded, stride-1) convolution's output."""
    if size < kernel:
        raise ValueError(f"image too small: {size} pixels for a {kernel}×{kernel} convolution")
    return size - kernel + 1


class GalTrunk(nn.Module):
    """conv4(32) – ReLU – conv4(32) – ReLU – maxpool2 – flatten: deterministic features."""

    def __init__(self, in_channels: int, image_size: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 4)
        self.conv2 = nn.Conv2d(32, 32, 4)
        side = _valid(_valid(image_size, 4), 4) // 2
        self.out_features = 32 * side * side  # 3872 for 28 pixels, 5408 for 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Pool, then ReLU: the same values as ReLU then pool, with ReLU on a quarter of the elements.
        x = self.conv2(F.relu(self.conv1(x)))
        return F.relu(F.max_pool2d(x, 2)).flatten(1)


def cnn(in_channels: int, image_size: int, num_classes: int, dropout: float) -> TrunkHeadModel:
    """The Bayesian CNN of Gal, Islam & Ghahramani 2017 (Deep Bayesian Active Learning with Image
    Data, arXiv 1703.02910), as in their Keras code.

    Trunk: conv 32 4×4 – ReLU – conv 32 4×4 – ReLU – max-pool 2 – flatten (32×11×11 = 3872 features
    for 28×28 inputs, 32×13×13 = 5408 for 32×32). Head: dropout p1 – dense 128 – ReLU – dropout p2 –
    dense(classes). The paper drops the pooled feature maps with 0.25 and the dense-128 output with
    0.5; the pooled maps are exactly the flattened head input, so that first dropout sits in the head
    and the trunk stays deterministic. Here (p1, p2) = (dropout/2, dropout): the default
    ``--dropout 0.5`` gives the paper's (0.25, 0.5).
    """
    trunk = GalTrunk(in_channels, image_size)
    return TrunkHeadModel(trunk, DropoutHead([trunk.out_features, 128, num_classes], (dropout / 2, dropout)))


class BatchBALDTrunk(nn.Module):
    """conv5(32) – maxpool2 – ReLU – conv5(64) – maxpool2 – ReLU – flatten: deterministic features."""

    def __init__(self, in_channels: int, image_size: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 5)
        self.conv2 = nn.Conv2d(32, 64, 5)
        side = _valid(_valid(image_size, 5) // 2, 5) // 2
        self.out_features = 64 * side * side  # 1024 for 28 pixels, 1600 for 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2(x), 2))
        return x.flatten(1)


def batchbald_cnn(in_channels: int, image_size: int, num_classes: int, dropout: float) -> TrunkHeadModel:
    """The MNIST CNN of the BatchBALD paper (Kirsch, van Amersfoort & Gal 2019, arXiv 1906.08158).

    Trunk: conv 32 5×5 – max-pool 2 – ReLU – conv 64 5×5 – max-pool 2 – ReLU – flatten (64×4×4 =
    1024 features for 28×28 inputs, 64×5×5 = 1600 for 32×32). Head: dropout – dense 128 – ReLU –
    dropout – dense(classes), both with rate ``dropout``.

    Difference from the paper's model: it also applies (channel-wise) dropout inside the conv block.
    This project samples only the head and needs a deterministic trunk (computed once per image for
    all K samples), so all the dropout here is in the head: before dense 128 (on the flattened conv
    features, element-wise) and before the last layer.
    """
    trunk = BatchBALDTrunk(in_channels, image_size)
    return TrunkHeadModel(trunk, DropoutHead([trunk.out_features, 128, num_classes], dropout))
