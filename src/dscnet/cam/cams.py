"""Class activation maps from the classifier's CAM logits (docs/METHOD.md §1).

``M_c = ReLU(W_c · F)``, max-normalised per image and class, with the classes that are not
in the image's tags set to zero: from one pass's logits (:func:`cams_from_logits`) or
averaged over scales and flips (:func:`cam_maps`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# CAM_EPS is added to the per-map maximum before dividing (as AFA): a map whose maximum is
# far below it is treated as noise and stays near zero instead of being blown up to 1.
from dscnet.utils.tta import CAM_EPS, multiscale_predict

__all__ = ["CAM_EPS", "cam_maps", "cams_from_logits", "mask_untagged"]


def cams_from_logits(
    cam_logits: torch.Tensor,
    tags: torch.Tensor | None,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Turn CAM logits into CAMs in ``[0, 1]``.

    Steps: ReLU; optional bilinear resize to ``size``; division by the per-image, per-class
    spatial maximum (plus :data:`CAM_EPS`, so an all-zero map stays all zero); classes whose
    tag is 0 are zeroed. The resize comes before the normalisation so that every tagged map
    with a positive activation peaks at (almost exactly) 1 at the output resolution.

    Differentiable (callers that build pseudo labels detach first).

    Args:
        cam_logits: ``[B, C, h, w]`` classifier outputs before ReLU.
        tags: ``[B, C]`` multi-hot image tags (any dtype; a class is kept where tag > 0),
            or ``None`` to keep every class.
        size: output ``(H, W)``; ``None`` keeps ``(h, w)``.

    Returns:
        ``[B, C, H, W]`` CAMs with the dtype and device of ``cam_logits``.
    """
    if cam_logits.dim() != 4:
        raise ValueError(f"cam_logits must be [B, C, h, w], got shape {tuple(cam_logits.shape)}")
    cams = F.relu(cam_logits)
    if size is not None and tuple(size) != tuple(cams.shape[-2:]):
        cams = F.interpolate(cams, size=tuple(size), mode="bilinear", align_corners=False)
    peak = cams.amax(dim=(-2, -1), keepdim=True)
    cams = cams / (peak + CAM_EPS)
    return mask_untagged(cams, tags)


def mask_untagged(cams: torch.Tensor, tags: torch.Tensor | None) -> torch.Tensor:
    """Zero the channels of classes whose tag is 0 (``tags=None`` keeps every class)."""
    if tags is None:
        return cams
    if tags.shape != cams.shape[:2]:
        raise ValueError(f"tags must be [B, C] = {tuple(cams.shape[:2])}, got {tuple(tags.shape)}")
    keep = (tags > 0).to(device=cams.device, dtype=cams.dtype)
    return cams * keep[:, :, None, None]


@torch.no_grad()
def cam_maps(
    model: nn.Module,
    images: torch.Tensor,
    tags: torch.Tensor | None = None,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    out_size: tuple[int, int] | None = None,
    size_divisor: int = 1,
) -> torch.Tensor:
    """Max-normalised CAMs ``[B, C, H, W]`` in [0, 1] from ``model.cam``, averaged over
    ``scales`` (and left-right flips) at ``out_size`` (default: the input size).

    With one scale and no flip this is :func:`cams_from_logits` of ``model.cam(images)``
    resized to ``out_size``, to the last bit.

    Args:
        tags: multi-hot ``[B, C]``; when given, channels of classes not in the tags are
            zeroed (docs/METHOD.md §1: only tagged classes are kept). ``None`` keeps all classes
            (for callers that pick classes from the image scores instead of labels).
    """
    cams = multiscale_predict(
        model.cam, images, scales, flip, out_size=out_size, mode="cam", size_divisor=size_divisor
    )
    return mask_untagged(cams, tags)
