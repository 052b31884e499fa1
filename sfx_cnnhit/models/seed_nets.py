"""The seed paper's networks (AlexNet, ResNet-18/50/101) from torchvision's builders, for 1-channel frames.

Built with ``weights=None`` (nothing is downloaded); only the first convolution changes, to take one
input channel with the same kernel, stride and padding. AlexNet's adaptive average pool (6 x 6) lets it
take 512 x 512 frames unchanged (its last feature map is then 15 x 15; the last conv's 31 x 31).
torchvision is imported when a network is built (importing it costs about a second, and every
command imports the model zoo).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import cast

from torch import nn


def _torchvision_models() -> ModuleType:
    from torchvision import models

    return cast(ModuleType, models)  # torchvision has no type hints


def _one_channel(conv: nn.Conv2d) -> nn.Conv2d:
    """A fresh copy of ``conv`` that takes a single input channel."""
    return nn.Conv2d(
        1,
        conv.out_channels,
        # A Conv2d's kernel_size, stride, padding and dilation are pairs (typed as tuple[int, ...]).
        cast("tuple[int, int]", conv.kernel_size),
        cast("tuple[int, int]", conv.stride),
        cast("str | tuple[int, int]", conv.padding),
        cast("tuple[int, int]", conv.dilation),
        conv.groups,
        bias=conv.bias is not None,
    )


def alexnet(num_classes: int = 2, dropout: float = 0.5) -> nn.Module:
    """torchvision AlexNet with a 1-channel first convolution; Grad-CAM target ``features.10``."""
    model = _torchvision_models().alexnet(weights=None, num_classes=num_classes, dropout=dropout)
    model.features[0] = _one_channel(model.features[0])
    return cast(nn.Module, model)  # torchvision has no type hints


def _resnet(name: str) -> Callable[..., nn.Module]:
    def build(num_classes: int = 2) -> nn.Module:
        model: nn.Module = getattr(_torchvision_models(), name)(weights=None, num_classes=num_classes)
        model.conv1 = _one_channel(cast(nn.Conv2d, model.conv1))
        return model

    build.__name__ = name
    build.__doc__ = f"torchvision {name} with a 1-channel conv1; Grad-CAM target ``layer4``."
    return build


resnet18 = _resnet("resnet18")
resnet50 = _resnet("resnet50")
resnet101 = _resnet("resnet101")
