"""HitNet: the compact CNN that vetoes frames in real time on a CPU.

Default design (``hitnet``: input ``(n, 1, 512, 512)``, a 512x512 frame at full resolution, larger
frames max-pool binned by :mod:`sfx_cnnhit.models.preprocess`):

========== ======================================================= ========= ============
module     layers                                                   stride    out (512²)
========== ======================================================= ========= ============
down.0     2x2 stride-2 conv (1 -> 4) and BN, no ReLU                 /2        4 x 256²
down.1-3   3x3 stride-2 convs, BN, ReLU: 4 -> 16 -> 32 -> 64          /16       64 x 32²
blocks     residual block; residual block with dilation 2             /16       64 x 32²
pool       global average and global max, concatenated                          128
head       dropout, linear -> classes
========== ======================================================= ========= ============

0.17 M parameters and 0.20 GMAC (multiply-adds) per frame. The linear 2x2 stem is a learned,
lossless space-to-depth (a one-channel 3x3 convolution at full resolution is slow on CPU), so the
first nonlinear layer still sees raw pixels and can tell one-pixel hot pixels from Bragg spots,
which the point-spread function spreads over several pixels (binning first loses that). Bragg spots
are sparse, so global max pooling carries the "is there any spot" evidence and the average the "how
many". The last stage is at 1/16 (a 32 x 32 Grad-CAM grid, target ``blocks``) with a dilated block
for context (receptive field 222 input pixels). ``hitnet_lite`` has one 3x3 convolution fewer on a
256x256 input (frames binned twice as much). Every convolution is followed by batch norm, which
:func:`fuse_conv_bn_` folds away for inference.
"""

from __future__ import annotations

import itertools
from typing import cast

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


class ConvBNReLU(nn.Sequential):
    """Convolution (3x3 by default, "same" padding for odd kernels), batch norm, optional ReLU."""

    def __init__(
        self, c_in: int, c_out: int, stride: int = 1, dilation: int = 1, relu: bool = True, kernel: int = 3
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(c_in, c_out, kernel, stride, padding=dilation * (kernel - 1) // 2, dilation=dilation, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity shortcut (ResNet's basic block)."""

    def __init__(self, channels: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(channels, channels, dilation=dilation)
        self.conv2 = ConvBNReLU(channels, channels, dilation=dilation, relu=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.relu(x + self.conv2(self.conv1(x)))
        return out


class AvgMaxPool(nn.Module):
    """Global average and global max pooling, concatenated: ``(n, c, h, w) -> (n, 2c)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)


class HitNet(nn.Module):
    """Compact hit/miss (or 5-class) classifier for 1-channel preprocessed frames.

    Args:
        num_classes: outputs.
        channels: output channels of the stride-2 layers of ``down``: a linear 2x2 patch convolution
            (with batch norm, no ReLU: a learned, lossless space-to-depth when ``channels[0] >= 4``),
            then 3x3 convolutions with BN and ReLU. Their number sets the stride of the last stage
            (4 -> 1/16); the residual ``blocks`` keep the last count.
        dropout: before the linear head.
    """

    def __init__(
        self, num_classes: int = 2, channels: tuple[int, ...] = (4, 16, 32, 64), dropout: float = 0.2
    ) -> None:
        super().__init__()
        if len(channels) < 2:
            raise ValueError("HitNet needs at least two downsampling stages")
        stem = ConvBNReLU(1, channels[0], stride=2, relu=False, kernel=2)
        convs = (ConvBNReLU(i, o, stride=2) for i, o in itertools.pairwise(channels))
        self.down = nn.Sequential(stem, *convs)
        c = channels[-1]
        self.blocks = nn.Sequential(ResidualBlock(c), ResidualBlock(c, dilation=2))
        self.pool = AvgMaxPool()
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * c, num_classes))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        # Zero-init the last BN of each residual branch: every block starts as the identity.
        for block in self.blocks:
            bn = cast(nn.BatchNorm2d, cast(ResidualBlock, block).conv2[1])  # blocks holds ResidualBlocks
            nn.init.zeros_(bn.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, 1, H, W) -> (n, c, H/2^d, W/2^d)`` (d = len(channels)), the Grad-CAM target's output."""
        features: torch.Tensor = self.blocks(self.down(x))
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(n, num_classes)``."""
        logits: torch.Tensor = self.head(self.pool(self.forward_features(x)))
        return logits


def fuse_conv_bn_(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm2d that directly follows a Conv2d inside an ``nn.Sequential`` into it.

    For inference only (the model must be in eval mode); module paths stay the same, so Grad-CAM
    target layers still resolve. Returns ``model``, changed in place.
    """
    if model.training:
        raise ValueError("fuse_conv_bn_ needs a model in eval mode")
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                seq[i] = fuse_conv_bn_eval(conv, bn)
                seq[i + 1] = nn.Identity()
    return model
