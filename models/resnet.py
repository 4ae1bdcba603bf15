"""torchvision's ResNet18 adapted to small images, with dropout in its classifier head."""
from __future__ import annotations

from torch import nn

from models.head import DropoutHead, TrunkHeadModel


def resnet18(in_channels: int, image_size: int, num_classes: int, dropout: float) -> TrunkHeadModel:
    """ResNet18 with a 3×3 stride-1 stem and no max-pool; head: dropout-fc(512→classes)."""
    # Imported here on purpose: importing torchvision costs about 1.5 s of CPU in every process (it pulls in
    # torch._dynamo), and only this model needs it.
    import torchvision.models
    net = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()  # the trunk ends at the 512-d pooled features
    return TrunkHeadModel(net, DropoutHead([512, num_classes], dropout))
