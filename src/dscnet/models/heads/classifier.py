"""Classification head: 1x1 conv to CAM logits, global pooling to image scores (docs/METHOD.md §1)."""

from __future__ import annotations

import torch
from torch import nn

from dscnet.errors import ConfigError

POOLINGS = ("gap", "gmp")


class ClassifierHead(nn.Module):
    """``W_c · F`` as a bias-free 1x1 conv, pooled over space to one score per class.

    Args:
        in_channels: feature width ``D``.
        num_classes: number of foreground classes ``C``.
        pooling: ``"gap"`` (global average pooling, the CNN default) or ``"gmp"`` (global
            max pooling, as AFA uses for transformers). Pooling is applied to the CAM
            logits; for GAP this equals classifying the pooled features (the conv is
            linear), for GMP it scores each class by its strongest location.

    ``forward(features [B, D, h, w]) -> (cam_logits [B, C, h, w], cls_logits [B, C])``.
    """

    def __init__(self, in_channels: int, num_classes: int, pooling: str = "gap") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"model.pooling must be one of {POOLINGS}, got '{pooling}'")
        self.pooling = pooling
        self.num_classes = num_classes
        self.classifier = nn.Conv2d(in_channels, num_classes, kernel_size=1, bias=False)

    def pool(self, cam_logits: torch.Tensor) -> torch.Tensor:
        """Image scores ``[B, C]`` from CAM logits ``[B, C, h, w]``."""
        if self.pooling == "gap":
            return cam_logits.mean(dim=(-2, -1))
        return cam_logits.amax(dim=(-2, -1))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cam_logits = self.classifier(features)
        return cam_logits, self.pool(cam_logits)
