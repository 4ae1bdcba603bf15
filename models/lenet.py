"""LeNet-5 for 1 or 3 channels and 28 or 32 pixels, with dropout in its classifier head."""
from __future__ import annotations

from torch import nn

from models.head import DropoutHead, TrunkHeadModel


def lenet(in_channels: int, image_size: int, num_classes: int, dropout: float) -> TrunkHeadModel:
    """conv5(6)-pool-conv5(16)-pool-fc120 trunk; head: dropout-fc84-relu-dropout-fc(classes)."""
    if image_size not in (28, 32):
        raise ValueError(f"lenet takes 28 or 32 pixel images, got {image_size}")
    pad = (32 - image_size) // 2  # 28-pixel inputs are padded to LeNet's 32
    trunk = nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=pad), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
    )
    return TrunkHeadModel(trunk, DropoutHead([120, 84, num_classes], dropout))
