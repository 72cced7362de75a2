"""Segmentation decoders on the backbone features (docs/METHOD.md §1): ``aspp`` on the output
map alone, ``fpn`` on several levels of a CNN."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn_relu(cin: int, cout: int, kernel: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(
            cin, cout, kernel, padding=dilation * (kernel // 2), dilation=dilation, bias=False
        ),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SegmentationHead(nn.Module):
    """ASPP-lite decoder: ``[B, D, h, w] -> [B, C+1, h, w]`` logits (channel 0 = background).

    A 1x1 reduction to ``hidden`` channels feeds two 3x3 conv-BN-ReLU branches, one plain
    and one dilated (wider context at the same resolution, as DeepLab's ASPP); the reduced
    features and both branches are concatenated, fused by a 1x1 conv-BN-ReLU, dropped out
    and classified by a 1x1 conv with bias. The reduction first keeps the 3x3 convs cheap
    whatever the backbone width (2048 for ResNet-50).

    Args:
        in_channels: feature width ``D``.
        num_classes_with_bg: ``C + 1``.
        hidden: decoder width.
        dropout: channel dropout before the classifier.
        dilation: dilation of the context branch.
    """

    multi_level = False

    def __init__(
        self,
        in_channels: int,
        num_classes_with_bg: int,
        hidden: int = 128,
        dropout: float = 0.1,
        dilation: int = 4,
    ) -> None:
        super().__init__()
        self.reduce = _conv_bn_relu(in_channels, hidden)
        self.local = _conv_bn_relu(hidden, hidden, kernel=3)
        self.context = _conv_bn_relu(hidden, hidden, kernel=3, dilation=dilation)
        self.fuse = _conv_bn_relu(3 * hidden, hidden)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(hidden, num_classes_with_bg, kernel_size=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.reduce(features)
        x = self.fuse(torch.cat([x, self.local(x), self.context(x)], dim=1))
        return self.classifier(self.dropout(x))


class FPNHead(nn.Module):
    """Multi-level decoder (FPN / SegFormer-MLP style): ``[levels] -> [B, C+1, h0, w0]``.

    Each level (finest first, e.g. a CNN's stride-8 and stride-16 stages and its output map)
    is projected by a 1x1 conv-BN to ``hidden`` channels and bilinearly resized to the finest
    level's grid; their sum goes through a 3x3 conv-BN-ReLU, dropout and a 1x1 classifier.
    The fine levels give the decoder the object borders that a stride-16 map alone blurs;
    the coarse one brings the semantics.

    Args:
        level_channels: channels of each level, finest first.
        num_classes_with_bg: ``C + 1``.
        hidden: decoder width.
        dropout: channel dropout before the classifier.
    """

    multi_level = True

    def __init__(
        self,
        level_channels: list[int],
        num_classes_with_bg: int,
        hidden: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, hidden, 1, bias=False), nn.BatchNorm2d(hidden)) for c in level_channels
        )
        self.fuse = _conv_bn_relu(hidden, hidden, kernel=3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(hidden, num_classes_with_bg, kernel_size=1)

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        if len(levels) != len(self.lateral):
            raise ValueError(f"FPNHead was built for {len(self.lateral)} levels, got {len(levels)}")
        size = levels[0].shape[-2:]
        x = self.lateral[0](levels[0])
        for lateral, level in zip(self.lateral[1:], levels[1:]):
            x = x + F.interpolate(lateral(level), size=size, mode="bilinear", align_corners=False)
        return self.classifier(self.dropout(self.fuse(x)))
