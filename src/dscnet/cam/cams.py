"""Class activation maps from the classifier's CAM logits (METHOD.md §1).

``M_c = ReLU(W_c · F)``, max-normalised per image and class, with the classes that are not
in the image's tags set to zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Added to the per-map maximum before dividing (as AFA): a map whose maximum is far below
# this is treated as noise and stays near zero instead of being blown up to 1.
CAM_EPS = 1e-5


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
    if tags is not None:
        if tags.shape != cam_logits.shape[:2]:
            raise ValueError(
                f"tags must be [B, C] = {tuple(cam_logits.shape[:2])}, got {tuple(tags.shape)}"
            )
        keep = (tags > 0).to(device=cams.device, dtype=cams.dtype)
        cams = cams * keep[:, :, None, None]
    return cams


def cams_with_background(cams: torch.Tensor, bg_threshold: float) -> torch.Tensor:
    """Prepend a constant background score: ``[B, C, H, W] -> [B, C+1, H, W]``.

    Channel 0 is ``bg_threshold`` everywhere, so ``argmax`` over the result is the plain
    (band-free) pseudo label: background wherever no class beats the threshold (ties go to
    background, since ``argmax`` returns the first maximum).
    """
    b, _, h, w = cams.shape
    bg = cams.new_full((b, 1, h, w), float(bg_threshold))
    return torch.cat([bg, cams], dim=1)
