"""``L_seg``: cross-entropy of the segmentation head on pseudo labels (docs/METHOD.md §1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def segmentation_loss(
    seg_logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255, balanced: bool = False
) -> torch.Tensor:
    """Pixel cross-entropy averaged over the non-ignored pixels.

    The logits are upsampled (bilinear) to the label size. The sum of the per-pixel losses
    is divided by ``max(#valid pixels, 1)``: identical to ``reduction="mean"`` when some
    pixel is valid, and an exact 0 that is still connected to ``seg_logits`` (``backward``
    works, gradients are 0) when every pixel is ignored — where PyTorch's mean returns NaN
    (0/0), the failure peers hit on all-ignore crops.

    Args:
        seg_logits: ``[B, C+1, h, w]``.
        labels: ``[B, H, W]`` long, ``0..C`` or ``ignore_index``.
        ignore_index: label excluded from the loss.
        balanced: ToCo's background/foreground balance: the mean over background pixels and
            the mean over foreground pixels, averaged (each 0 when it has no pixel), so that
            the background, which dominates pseudo labels, does not drown the objects.
    """
    if labels.dim() != 3 or seg_logits.dim() != 4 or labels.shape[0] != seg_logits.shape[0]:
        raise ValueError(
            f"expected seg_logits [B, C+1, h, w] and labels [B, H, W]; got "
            f"{tuple(seg_logits.shape)} and {tuple(labels.shape)}"
        )
    if tuple(seg_logits.shape[-2:]) != tuple(labels.shape[-2:]):
        seg_logits = F.interpolate(
            seg_logits, size=labels.shape[-2:], mode="bilinear", align_corners=False
        )
    labels = labels.long()
    if not balanced:
        total = F.cross_entropy(seg_logits, labels, ignore_index=ignore_index, reduction="sum")
        count = (labels != ignore_index).sum().clamp_min(1)
        return total / count.to(total.dtype)
    per_pixel = F.cross_entropy(seg_logits, labels, ignore_index=ignore_index, reduction="none")
    known = labels != ignore_index
    parts = []
    for part in (known & (labels == 0), known & (labels != 0)):
        parts.append((per_pixel * part).sum() / part.sum().clamp_min(1).to(per_pixel.dtype))
    return 0.5 * (parts[0] + parts[1])
