"""Online pseudo labels from CAMs: background threshold, uncertain band, optional PAR.

The rule, per pixel, with ``s`` = the highest (PAR-refined, when ``par`` is given) CAM
score among the image's tagged classes and ``c`` = its class:

1. ``argmax`` over ``{background = bg_threshold} ∪ {tagged classes}``: class ``c`` when
   ``s > bg_threshold``, else background (0). A tie goes to background.
2. Uncertain band: when ``low < s < high`` (open interval) the pixel becomes ``ignore_index``.

With the defaults (0.35 < 0.45 < 0.55) this is AFA's rule: ``s >= 0.55`` -> class,
``s <= 0.35`` -> background, in between -> ignore (AFA puts ``s == 0.55`` in the band; we use
the open interval of the config, ``(low, high)``). ``low = high = None`` (or ``low == high``)
turns the band off and leaves the plain threshold rule. Untagged classes never appear:
their scores are dropped before the argmax, whatever their CAM.

Refinement: AFA refines two score maps (background = ``low`` and background = ``high``,
each softmax-ed over the valid classes) with PAR and takes class / ignore / background from
their two argmaxes. We refine the tagged CAMs themselves, once: PAR is a convex
combination, so a constant background channel would stay exactly constant, and refining
the raw scores keeps the thresholds on the CAM scale (0..1) for both the background test
and the band. Only the tagged channels are refined (gathered per image, padded to the
largest tag count in the batch), which keeps PAR's cost independent of the number of
classes (81 on COCO).
"""

from __future__ import annotations

import torch

from dscnet.cam.par import PAR
from dscnet.errors import ConfigError


def _check_thresholds(bg_threshold: float, low: float | None, high: float | None) -> None:
    for name, value in (("cam.bg_threshold", bg_threshold), ("cam.low", low), ("cam.high", high)):
        if value is not None and not 0.0 <= float(value) <= 1.0:
            raise ConfigError(f"{name} must lie in [0, 1] (CAMs are max-normalised), got {value}")
    if low is not None and high is not None and float(low) > float(high):
        raise ConfigError(f"cam.low ({low}) must not exceed cam.high ({high})")


@torch.no_grad()
def top_tagged_scores(
    cams: torch.Tensor,
    tags: torch.Tensor,
    par: PAR | None = None,
    image: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The threshold-free half of :func:`make_pseudo_labels`: ``(top, cls)``, each ``[B, H, W]``.

    ``top`` is the highest (PAR-refined, when ``par`` is given) CAM score among the image's
    tagged classes, ``cls`` its class (1..C; 0 where the image has no tag, with ``top = -inf``).
    A threshold sweep computes this once and applies :func:`labels_from_top_scores` per threshold.

    Raises:
        ValueError: shape mismatch, or ``par`` given without ``image``.
    """
    if cams.dim() != 4 or tags.shape != cams.shape[:2]:
        raise ValueError(
            f"expected cams [B, C, H, W] and tags [B, C]; got {tuple(cams.shape)} and "
            f"{tuple(tags.shape)}"
        )
    if par is not None and image is None:
        raise ValueError("make_pseudo_labels: PAR refinement needs the image")
    b, _, h, w = cams.shape
    tagged = tags.to(cams.device) > 0
    num_tagged = int(tagged.sum(dim=1).max()) if b else 0
    if num_tagged == 0:
        empty = torch.full((b, h, w), float("-inf"), dtype=cams.dtype, device=cams.device)
        return empty, torch.zeros((b, h, w), dtype=torch.long, device=cams.device)

    # Tagged classes first (stable sort keeps class order), then padding slots.
    order = torch.argsort(tagged.to(torch.uint8), dim=1, descending=True, stable=True)
    order = order[:, :num_tagged]  # [B, T] class indices
    valid = torch.gather(tagged, 1, order)  # [B, T] False on padding slots
    scores = torch.gather(cams, 1, order[:, :, None, None].expand(b, num_tagged, h, w))
    scores = scores * valid[:, :, None, None].to(scores.dtype)
    if par is not None:
        scores = par(image, scores)
    # Padding slots can never win, even against a threshold of 0.
    scores = scores.masked_fill(~valid[:, :, None, None], float("-inf"))

    top, slot = scores.max(dim=1)  # [B, H, W]
    cls = torch.gather(order, 1, slot.flatten(1)).view(b, h, w) + 1
    return top, cls


def labels_from_top_scores(
    top: torch.Tensor,
    cls: torch.Tensor,
    bg_threshold: float = 0.45,
    low: float | None = 0.35,
    high: float | None = 0.55,
    ignore_index: int = 255,
) -> torch.Tensor:
    """The decision half of :func:`make_pseudo_labels` on :func:`top_tagged_scores`' output.

    Raises:
        ConfigError: a threshold outside ``[0, 1]`` or ``low > high``.
    """
    _check_thresholds(bg_threshold, low, high)
    labels = torch.where(top > bg_threshold, cls, torch.zeros_like(cls))
    if low is not None and high is not None:
        labels[(top > low) & (top < high)] = ignore_index
    return labels


@torch.no_grad()
def make_pseudo_labels(
    cams: torch.Tensor,
    tags: torch.Tensor,
    bg_threshold: float = 0.45,
    low: float | None = 0.35,
    high: float | None = 0.55,
    ignore_index: int = 255,
    par: PAR | None = None,
    image: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pseudo labels ``[B, H, W]`` (long; 0 = background, 1..C = classes, ``ignore_index``).

    See the module docstring for the exact rule. Runs without gradient.

    Args:
        cams: ``[B, C, H, W]`` CAMs in ``[0, 1]`` (see :func:`cams_from_logits`). The labels
            come out at this resolution.
        tags: ``[B, C]`` multi-hot image tags; a class is usable where its tag is > 0.
        bg_threshold: the constant background score.
        low, high: the uncertain band ``(low, high)``; ``None`` turns the band off.
        ignore_index: label of uncertain pixels.
        par: optional :class:`PAR`, applied to the tagged CAMs before the decision.
        image: ``[B, 3, H', W']`` image for ``par`` (resized to ``H, W`` by PAR).

    Raises:
        ConfigError: a threshold outside ``[0, 1]`` or ``low > high``.
        ValueError: shape mismatch, or ``par`` given without ``image``.
    """
    _check_thresholds(bg_threshold, low, high)  # before PAR's work
    top, cls = top_tagged_scores(cams, tags, par=par, image=image)
    return labels_from_top_scores(top, cls, bg_threshold, low, high, ignore_index)
