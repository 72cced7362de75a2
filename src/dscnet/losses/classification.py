"""``L_cls``: multilabel soft-margin loss on the pooled image scores (docs/METHOD.md §1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def multilabel_soft_margin_loss(cls_logits: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
    """Mean over images and classes of ``-[y·log σ(x) + (1-y)·log σ(-x)]``.

    A thin wrapper over :func:`torch.nn.functional.multilabel_soft_margin_loss` (which uses
    log-sigmoid, so it is finite for any finite logits, however large) that also accepts
    tags of any dtype and returns a graph-connected 0 for an empty batch instead of NaN.

    Args:
        cls_logits: ``[B, C]`` image scores.
        tags: ``[B, C]`` multi-hot tags.
    """
    if cls_logits.shape != tags.shape:
        raise ValueError(
            f"cls_logits {tuple(cls_logits.shape)} and tags {tuple(tags.shape)} must match"
        )
    if cls_logits.numel() == 0:
        return cls_logits.sum() * 0.0
    return F.multilabel_soft_margin_loss(cls_logits, tags.to(cls_logits.dtype))
