"""Multi-scale + horizontal-flip test-time augmentation of a dense network function.

The field's protocol: run the network on the image at several scales (e.g. 0.5, 0.75, 1.0,
1.25), each also flipped left-right, bring every output back to the image size and average.
Segmentation averages *probabilities* (softmax of each pass); CAMs average the ReLU'd logits
and are max-normalised per image and class at the end, as AFA/ToCo do.

This module knows nothing of models or CAM semantics beyond that (it sits at the bottom
floor, so that the pseudo labeller in ``dscnet.cam`` and inference in ``dscnet.inference``
share it). Everything is batched over images and follows the device and dtype of the input.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F

Mode = Literal["softmax", "cam"]
LogitsFn = Callable[[torch.Tensor], torch.Tensor]

# Added to the per-map maximum before dividing, so an all-zero CAM stays zero instead of NaN
# (the same constant as ``dscnet.cam.cams.CAM_EPS``, which imports it from here).
CAM_EPS = 1e-5


def _check_scales(scales: Sequence[float]) -> tuple[float, ...]:
    scales = tuple(float(s) for s in scales)
    if not scales:
        raise ValueError("scales must hold at least one scale, e.g. (1.0,)")
    if any(not math.isfinite(s) or s <= 0 for s in scales):
        raise ValueError(f"scales must be positive numbers, got {scales}")
    return scales


def _run_padded(fn: LogitsFn, x: torch.Tensor, size_divisor: int) -> torch.Tensor:
    """``fn(x)`` with ``x`` zero-padded (bottom/right) to a multiple of ``size_divisor``.

    Zero is the dataset mean after normalisation, the least surprising fill. The output is
    cropped back to the part that covers the unpadded input, whatever its resolution (input
    size for segmentation logits, feature size for CAM logits).
    """
    h, w = x.shape[-2:]
    if size_divisor <= 1:
        return fn(x)
    ph = (-h) % size_divisor
    pw = (-w) % size_divisor
    if ph == 0 and pw == 0:
        return fn(x)
    out = fn(F.pad(x, (0, pw, 0, ph)))
    oh, ow = out.shape[-2:]
    keep_h = max(1, round(oh * h / (h + ph)))
    keep_w = max(1, round(ow * w / (w + pw)))
    return out[..., :keep_h, :keep_w]


def multiscale_predict(
    fn: LogitsFn,
    images: torch.Tensor,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    out_size: tuple[int, int] | None = None,
    mode: Mode = "softmax",
    size_divisor: int = 1,
) -> torch.Tensor:
    """Average ``fn`` over scales (and horizontal flips) at the input resolution.

    Args:
        fn: maps images ``[B, 3, h, w]`` to logits ``[B, K, h', w']`` (any ``h', w'``).
        images: normalised images ``[B, 3, H, W]``.
        scales: resize factors; each pass resizes the batch bilinearly (align_corners=False).
        flip: also run every scale on the left-right flipped batch, flipped back after.
        out_size: ``(H_out, W_out)`` of the result; default the input size ``(H, W)``.
        mode: ``"softmax"``: mean of per-pass softmax probabilities over K (they sum to 1);
            ``"cam"``: mean of per-pass ReLU'd logits, then divided by each map's maximum
            (values in [0, 1], per image and channel).
        size_divisor: zero-pad every pass to a multiple of this (then crop back), for
            backbones that need sizes divisible by their stride or patch size; 1 = no padding.

    Returns:
        ``[B, K, H_out, W_out]`` probabilities or normalised CAMs, in the input's dtype/device.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be [B, 3, H, W], got shape {tuple(images.shape)}")
    if mode not in ("softmax", "cam"):
        raise ValueError(f"mode must be 'softmax' or 'cam', got {mode!r}")
    scales = _check_scales(scales)
    b, _, h, w = images.shape
    size = (int(out_size[0]), int(out_size[1])) if out_size is not None else (h, w)

    total: torch.Tensor | None = None
    passes = 0
    for scale in scales:
        sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
        x = images
        if (sh, sw) != (h, w):
            x = F.interpolate(images, size=(sh, sw), mode="bilinear", align_corners=False)
        if flip:
            # One call on [x; flip(x)]: a single larger batch is faster than two passes.
            x = torch.cat([x, x.flip(-1)], dim=0)
        logits = _run_padded(fn, x, size_divisor)
        if mode == "cam":
            # ReLU before resizing: bilinear interpolation of negatives would leak into
            # positive pixels at object borders.
            logits = F.relu(logits)
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        maps = torch.softmax(logits, dim=1) if mode == "softmax" else logits
        if flip:
            maps = maps[:b] + maps[b:].flip(-1)
        total = maps if total is None else total + maps
        passes += 2 if flip else 1

    assert total is not None
    if mode == "softmax":
        return total / passes
    peak = total.amax(dim=(-2, -1), keepdim=True)
    return total / (peak + CAM_EPS)
