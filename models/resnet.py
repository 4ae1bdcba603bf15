"""torchvision's ResNet18 adapted to small images, with dropout in its classifier head."""
from __future__ import annotations

from torch import nn

from models.head import DropoutHead, TrunkHeadModel


STEMS = ("small", "imagenet")


def resnet18(in_channels: int, image_size: int, num_classes: int, dropout: float,
             resnet_stem: str = "small") -> TrunkHeadModel:
    """ResNet18; head: dropout-fc(512→classes). Its stem (``resnet_stem``): ``small``, a 3×3 stride-1
    convolution and no max-pool (full resolution into layer1: about 7× the FLOPs of) ``imagenet``,
    torchvision's 7×7 stride-2 convolution and 3×3 stride-2 max-pool (what the original project used)."""
    # Imported here on purpose: importing torchvision costs about 1.5 s of CPU in every process (it pulls in
    # torch._dynamo), and only this model needs it.
    import torchvision.models
    if resnet_stem not in STEMS:
        raise ValueError(f"unknown ResNet stem {resnet_stem!r}")
    net = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    if resnet_stem == "small":
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    else:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    net.fc = nn.Identity()  # the trunk ends at the 512-d pooled features
    return TrunkHeadModel(net, DropoutHead([512, num_classes], dropout))
