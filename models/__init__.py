"""Model registry: plain dict from CLI name to builder(in_channels, image_size, num_classes, dropout)."""
from __future__ import annotations

import math

import torch
from torch import nn

from models.cnn import batchbald_cnn, cnn
from models.ensemble import Ensemble
from models.head import DropoutHead, TrunkHeadModel
from models.lenet import lenet
from models.resnet import resnet18

MODELS = {"lenet": lenet, "resnet18": resnet18, "cnn": cnn, "batchbald_cnn": batchbald_cnn}
# The configuration fields a model's builder takes besides the common four (as keyword arguments); a
# field no model of a run declares must keep its default (loop.check_declared).
MODEL_OPTIONS = {"resnet18": ("resnet_stem",)}


def model_options(name: str, cfg) -> dict:
    """The keyword arguments of model ``name``'s builder, from the run's configuration."""
    return {field: getattr(cfg, field) for field in MODEL_OPTIONS.get(name, ())}


def build_model(name: str, in_channels: int, image_size: int, num_classes: int, dropout: float,
                generator: torch.Generator, **options) -> TrunkHeadModel:
    """A freshly initialised model whose weights come from ``generator`` alone; ``options``: its own
    (MODEL_OPTIONS)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}")
    model = MODELS[name](in_channels, image_size, num_classes, dropout, **options)
    init_weights(model, generator)
    return model


@torch.no_grad()
def init_weights(model: nn.Module, generator: torch.Generator) -> None:
    """Re-initialise every parameter from ``generator`` (the constructors drew from the global RNG).

    Convolutions: Kaiming-normal (fan_out, ReLU), as torchvision's ResNet. Linear layers: PyTorch's
    default uniform(±1/sqrt(fan_in)) for weights and biases. Norm layers: weight 1, bias 0.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu", generator=generator)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.Linear):
            bound = 1.0 / math.sqrt(module.in_features)
            nn.init.uniform_(module.weight, -bound, bound, generator=generator)
            nn.init.uniform_(module.bias, -bound, bound, generator=generator)
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
            if isinstance(module, nn.BatchNorm2d):
                module.reset_running_stats()


__all__ = ["MODELS", "MODEL_OPTIONS", "DropoutHead", "Ensemble", "TrunkHeadModel", "build_model", "init_weights",
           "model_options"]
