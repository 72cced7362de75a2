"""PGCL projection head ``g_p``: pixel embeddings on the unit sphere (docs/METHOD.md §2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ProjectionHead(nn.Module):
    """1x1 conv - BN - ReLU - 1x1 conv, L2-normalised along channels.

    Args:
        in_channels: feature width ``D``.
        dim: embedding width ``d``.
        hidden: width of the middle layer; ``None`` uses ``in_channels`` (as in the
            pixel-contrast literature).

    ``forward(features [B, D, h, w]) -> [B, d, h, w]`` with unit norm at every pixel.
    """

    def __init__(self, in_channels: int, dim: int = 128, hidden: int | None = None) -> None:
        super().__init__()
        hidden = in_channels if hidden is None else hidden
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden, kernel_size=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, dim, kernel_size=1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(features), p=2.0, dim=1)
