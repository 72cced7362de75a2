"""A light segmentation decoder on the backbone features (docs/METHOD.md §1)."""

from __future__ import annotations

import torch
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
