"""Segmentation probabilities with multi-scale + flip test-time augmentation (docs/METHOD.md §1).

The averaging itself is :func:`dscnet.utils.tta.multiscale_predict`; CAMs with the same
augmentation are :func:`dscnet.cam.cams.cam_maps`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dscnet.utils.tta import multiscale_predict


@torch.no_grad()
def segment_probs(
    model: nn.Module,
    images: torch.Tensor,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    out_size: tuple[int, int] | None = None,
    size_divisor: int = 1,
) -> torch.Tensor:
    """Segmentation probabilities ``[B, C+1, H, W]`` from ``model.segment``; never reads tags."""
    return multiscale_predict(
        model.segment, images, scales, flip, out_size=out_size, mode="softmax",
        size_divisor=size_divisor,
    )
