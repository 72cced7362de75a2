"""The pseudo-label rule, in one place: CAMs -> PAR -> background threshold / uncertain band.

:class:`PseudoLabeler` is the only code that turns CAMs into pseudo labels. Training (the
online labels of :class:`~dscnet.losses.dscl.DSCLObjective`), CAM and pseudo-label
evaluation, the background-threshold sweep, pseudo-label export and the example pictures all
call it; their differences (working scale, multi-scale CAMs, PAR on or off) are its
parameters, not second code paths. :func:`build_pseudo_labeler` makes it from ``cfg.cam`` and
``cfg.data``.

The rule, per pixel, with ``s`` = the highest (PAR-refined) CAM score among the image's
tagged classes and ``c`` = its class:

1. ``argmax`` over ``{background = bg_threshold} ∪ {tagged classes}``: class ``c`` when
   ``s > bg_threshold``, else background (0). A tie goes to background.
2. Uncertain band: when ``low < s < high`` (open interval) the pixel becomes ``ignore_index``.

With (0.35, 0.45, 0.55) this is AFA's rule: ``s >= 0.55`` -> class, ``s <= 0.35`` ->
background, in between -> ignore (AFA puts ``s == 0.55`` in the band; we use the open
interval). ``low = high = None`` (or ``low == high``) turns the band off. Untagged classes
never appear: their scores are dropped before the argmax, whatever their CAM. Without PAR and
band this is the field's CAM-quality protocol (argmax of the tagged CAMs against a constant
background score).

Refinement: AFA refines two score maps (background = ``low`` and = ``high``, softmax-ed over
the valid classes) with PAR and takes class / ignore / background from their two argmaxes. We
refine the tagged CAMs themselves, once: PAR is a convex combination, so a constant background
channel would stay exactly constant, and refining the raw scores keeps the thresholds on the
CAM scale (0..1) for both the background test and the band. Only the tagged channels are
refined (gathered per image, padded to the largest tag count in the batch), which keeps PAR's
cost independent of the number of classes (81 on COCO).

Scale: CAMs, PAR and the per-class scores are computed at ``scale`` of the input size (AFA
refines at half size: PAR's cost grows with the pixel count), then brought to the label size,
either by nearest neighbour on the decision inputs (``upsample="nearest"``: the same labels as
deciding first and upsampling the labels) or by bilinear interpolation of the refined
per-class scores before the decision (``upsample="bilinear"``: smooth borders).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from dscnet.cam.cams import cam_maps, cams_from_logits
from dscnet.cam.par import PAR
from dscnet.data.transforms import denormalize
from dscnet.errors import ConfigError

Upsample = Literal["nearest", "bilinear"]
# The probability a thresholded label gets in the CRF's unary (IRN's crf_inference_label).
CRF_LABEL_PROB = 0.7
UPSAMPLE_MODES = ("nearest", "bilinear")


@dataclass(frozen=True)
class Thresholds:
    """Background score and uncertain band ``(low, high)``; ``low``/``high`` None: no band.

    Raises:
        ConfigError: a value outside ``[0, 1]`` (CAMs are max-normalised) or ``low > high``.
    """

    bg: float
    low: float | None = None
    high: float | None = None

    def __post_init__(self) -> None:
        for name, value in (("cam.bg_threshold", self.bg), ("cam.low", self.low), ("cam.high", self.high)):
            if value is not None and not (math.isfinite(float(value)) and 0.0 <= float(value) <= 1.0):
                raise ConfigError(f"{name} must lie in [0, 1] (CAMs are max-normalised), got {value}")
        if self.low is not None and self.high is not None and float(self.low) > float(self.high):
            raise ConfigError(f"cam.low ({self.low}) must not exceed cam.high ({self.high})")

    @property
    def has_band(self) -> bool:
        """Whether some scores fall in the (non-empty) uncertain band."""
        return self.low is not None and self.high is not None and self.low < self.high

    @classmethod
    def around(cls, threshold: float, band: float) -> Thresholds:
        """``threshold`` with the band ``(threshold - band, threshold + band)`` clipped to
        ``[0, 1]``; ``band = 0`` turns the band off (``low == high``).

        Raises:
            ConfigError: ``threshold`` outside ``[0, 1]`` or a negative ``band``.
        """
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(
                f"background threshold {threshold} lies outside [0, 1] (CAMs are max-normalised)"
            )
        if band < 0:
            raise ConfigError(f"the uncertain band must be >= 0, got {band}")
        return cls(float(threshold), max(0.0, threshold - band), min(1.0, threshold + band))

    def without_band(self) -> Thresholds:
        """The same background score with the band off."""
        return Thresholds(self.bg)


def decide(top: torch.Tensor, cls: torch.Tensor, thresholds: Thresholds, ignore_index: int = 255) -> torch.Tensor:
    """Labels from the top tagged score ``top`` and its class ``cls`` (both ``[B, H, W]``).

    Class ``cls`` where ``top > thresholds.bg``, else background (0); ``ignore_index`` where
    ``low < top < high``. Pixel-wise, so it commutes with any nearest-neighbour resize.
    """
    labels = torch.where(top > thresholds.bg, cls, torch.zeros_like(cls))
    if thresholds.has_band:
        labels = labels.masked_fill((top > thresholds.low) & (top < thresholds.high), ignore_index)
    return labels


def _tagged_channels(cams: torch.Tensor, tags: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The tagged classes' CAMs, packed: ``(scores [B, T, H, W], order [B, T], valid [B, T])``.

    ``order`` holds class indices (tagged classes first, in class order); ``valid`` is False on
    the padding slots of images with fewer than ``T`` tags (their scores are 0).
    """
    b, _, h, w = cams.shape
    tagged = tags.to(cams.device) > 0
    num_tagged = int(tagged.sum(dim=1).max()) if b else 0
    # Tagged classes first (a stable sort keeps class order), then padding slots.
    order = torch.argsort(tagged.to(torch.uint8), dim=1, descending=True, stable=True)[:, :num_tagged]
    valid = torch.gather(tagged, 1, order)
    scores = torch.gather(cams, 1, order[:, :, None, None].expand(b, num_tagged, h, w))
    return scores * valid[:, :, None, None].to(scores.dtype), order, valid


class PseudoLabeler(nn.Module):
    """CAM normalisation, PAR refinement, the decision, the working scale and the resize back.

    Args:
        thresholds: background score and uncertain band.
        par: PAR module, or None for no refinement.
        scale: working scale of CAMs and PAR, relative to the input image (0.5 in training,
            as AFA; 1.0 for export and the CAM protocol).
        cam_scales, cam_flip: test-time augmentation of the CAMs (AFA/ToCo use scales 1, 0.5,
            1.5 for online labels). With ``(1.0,)`` and no flip, training reuses the CAM logits
            of its own forward pass; otherwise the model runs again without gradient.
        upsample: ``nearest`` or ``bilinear`` (see the module docstring).
        mean, std: the data normalisation, undone before PAR reads the colours.
        ignore_index: the label of uncertain pixels.
        size_divisor: zero-pad every CAM pass to a multiple of this (models that need it).

    Every method runs without gradient and follows the device and dtype of its inputs.
    """

    def __init__(
        self,
        thresholds: Thresholds,
        par: PAR | None = None,
        *,
        scale: float = 1.0,
        cam_scales: Sequence[float] = (1.0,),
        cam_flip: bool = False,
        upsample: Upsample = "nearest",
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        ignore_index: int = 255,
        size_divisor: int = 1,
    ) -> None:
        super().__init__()
        if not (math.isfinite(scale) and 0.0 < scale <= 4.0):
            raise ConfigError(f"cam.par.scale must lie in (0, 4], got {scale}")
        if upsample not in UPSAMPLE_MODES:
            raise ConfigError(f"cam.upsample must be one of {', '.join(UPSAMPLE_MODES)}, got '{upsample}'")
        cam_scales = tuple(float(s) for s in cam_scales)
        if not cam_scales or any(not (math.isfinite(s) and s > 0) for s in cam_scales):
            raise ConfigError(f"cam.online_scales must be positive numbers, got {list(cam_scales)}")
        self.thresholds = thresholds
        self.par = par
        self.scale = float(scale)
        self.cam_scales = cam_scales
        self.cam_flip = bool(cam_flip)
        self.upsample = upsample
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.ignore_index = int(ignore_index)
        self.size_divisor = max(1, int(size_divisor))

    def extra_repr(self) -> str:
        return (
            f"thresholds={self.thresholds}, scale={self.scale}, cam_scales={self.cam_scales}, "
            f"cam_flip={self.cam_flip}, upsample={self.upsample}"
        )

    def variant(self, *, refine: bool = True, band: bool = True, **changes: Any) -> PseudoLabeler:
        """A labeler with some settings changed (sharing this one's PAR module).

        ``refine=False`` drops PAR, ``band=False`` the uncertain band; ``changes`` are
        constructor arguments (``scale``, ``cam_scales``, ``thresholds`` ...).
        """
        args: dict[str, Any] = {
            "thresholds": self.thresholds, "par": self.par if refine else None,
            "scale": self.scale, "cam_scales": self.cam_scales, "cam_flip": self.cam_flip,
            "upsample": self.upsample, "mean": self.mean, "std": self.std,
            "ignore_index": self.ignore_index, "size_divisor": self.size_divisor,
        }  # fmt: skip
        args.update(changes)
        if not band:
            args["thresholds"] = args["thresholds"].without_band()
        return PseudoLabeler(**args)

    # ------------------------------------------------------------------ the three stages
    def working_size(self, size: Sequence[int]) -> tuple[int, int]:
        """The size CAMs and PAR run at for an input of ``size``."""
        return tuple(max(1, round(int(s) * self.scale)) for s in size)  # type: ignore[return-value]

    @torch.no_grad()
    def cams(
        self,
        images: torch.Tensor,
        tags: torch.Tensor,
        *,
        cam_logits: torch.Tensor | None = None,
        model: nn.Module | None = None,
    ) -> torch.Tensor:
        """Tagged, max-normalised CAMs ``[B, C, h, w]`` at the working size (float32 or wider).

        From ``cam_logits`` (one pass already run, e.g. training's forward) when the labeler
        uses one scale without flip; else from ``model.cam`` over ``cam_scales`` (and flips).
        """
        size = self.working_size(images.shape[-2:])
        single = self.cam_scales == (1.0,) and not self.cam_flip
        if cam_logits is not None and single:
            return cams_from_logits(cam_logits.detach().float(), tags, size=size)
        if model is None:
            raise ValueError("PseudoLabeler: multi-scale / flipped CAMs need the model")
        cams = cam_maps(
            model, images, tags, self.cam_scales, self.cam_flip, out_size=size,
            size_divisor=self.size_divisor,
        )  # fmt: skip
        return cams.to(torch.promote_types(cams.dtype, torch.float32))

    @torch.no_grad()
    def refine(
        self,
        cams: torch.Tensor,
        tags: torch.Tensor,
        images: torch.Tensor | None = None,
        size: Sequence[int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(top, cls)`` at ``size`` (default: the CAMs' size): the highest PAR-refined tagged
        score and its class (1..C; 0 where the image has no tag, with ``top = -inf``).

        The threshold-free part of the rule: a threshold sweep computes it once and calls
        :func:`decide` per candidate.

        Raises:
            ValueError: shape mismatch, or PAR on without ``images``.
        """
        if cams.dim() != 4 or tags.shape != cams.shape[:2]:
            raise ValueError(
                f"expected cams [B, C, H, W] and tags [B, C]; got {tuple(cams.shape)} and "
                f"{tuple(tags.shape)}"
            )
        if self.par is not None and images is None:
            raise ValueError("PseudoLabeler: PAR refinement needs the images")
        b, _, h, w = cams.shape
        out_size = (h, w) if size is None else (int(size[0]), int(size[1]))
        scores, order, valid = self.refined_channels(cams, tags, images, out_size if self.upsample == "bilinear" else None)
        if scores.shape[1] == 0:
            empty = torch.full((b, *out_size), float("-inf"), dtype=cams.dtype, device=cams.device)
            return empty, torch.zeros((b, *out_size), dtype=torch.long, device=cams.device)
        # Padding slots can never win, even against a threshold of 0.
        scores = scores.masked_fill(~valid[:, :, None, None], float("-inf"))
        top, slot = scores.max(dim=1)
        cls = torch.gather(order, 1, slot.flatten(1)).view(slot.shape) + 1
        if tuple(top.shape[-2:]) != out_size:
            top = F.interpolate(top[:, None], size=out_size, mode="nearest")[:, 0]
            cls = F.interpolate(cls[:, None].float(), size=out_size, mode="nearest")[:, 0].long()
        return top, cls

    @torch.no_grad()
    def refined_channels(
        self,
        cams: torch.Tensor,
        tags: torch.Tensor,
        images: torch.Tensor | None = None,
        size: Sequence[int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The tagged classes' PAR-refined scores, bilinearly resized to ``size`` when given:
        ``(scores [B, T, H, W], order [B, T] class indices, valid [B, T])`` (padding slots of
        images with fewer than ``T`` tags hold 0 and ``valid`` False)."""
        scores, order, valid = _tagged_channels(cams, tags)
        if scores.shape[1] and self.par is not None:
            rgb = denormalize(images.detach().to(scores.dtype), self.mean, self.std)
            scores = self.par(rgb, scores)
        if size is not None and scores.shape[1] and tuple(scores.shape[-2:]) != tuple(size):
            scores = F.interpolate(scores, size=tuple(size), mode="bilinear", align_corners=False)
        return scores, order, valid

    @torch.no_grad()
    def crf_labels(
        self,
        images: torch.Tensor,
        tags: torch.Tensor,
        crf: Callable[[np.ndarray, np.ndarray], np.ndarray],
        *,
        cam_logits: torch.Tensor | None = None,
        model: nn.Module | None = None,
    ) -> torch.Tensor:
        """Pseudo labels at the input size, refined by a dense CRF (IRN's rule).

        ``crf(rgb uint8 [H, W, 3], probs [K, H, W]) -> probs [K, H, W]``. :meth:`cams` and
        :meth:`refined_channels` at the input size, then :meth:`crf_decide`.
        """
        cams = self.cams(images, tags, cam_logits=cam_logits, model=model)
        scores, order, valid = self.refined_channels(cams, tags, images, images.shape[-2:])
        return self.crf_decide(images, scores, order, valid, crf)

    @torch.no_grad()
    def crf_decide(
        self,
        images: torch.Tensor,
        scores: torch.Tensor,
        order: torch.Tensor,
        valid: torch.Tensor,
        crf: Callable[[np.ndarray, np.ndarray], np.ndarray],
        thresholds: Thresholds | None = None,
    ) -> torch.Tensor:
        """The CRF rule on refined tagged scores (:meth:`refined_channels` at the image size).

        The labels of the threshold rule (argmax of a constant background score and the
        refined tagged scores) become a CRF unary (probability :data:`CRF_LABEL_PROB` on the
        label, the rest shared by the other classes) and the CRF's argmax is the label. With a
        band, this runs twice: with the background score at ``high`` (a class that wins there
        is confident foreground) and at ``low`` (background that wins there is confident
        background); what the two disagree on becomes ``ignore_index``, as the band does
        without CRF. Per image (the CRF runs on the CPU). ``thresholds`` default to this
        labeler's (a threshold sweep passes each candidate).
        """
        rgb = (denormalize(images.detach().float(), self.mean, self.std) * 255).round().byte()
        rgb = rgb.permute(0, 2, 3, 1).cpu().numpy()
        t = thresholds or self.thresholds
        backgrounds = (t.high, t.low) if t.has_band else (t.bg,)
        labels = torch.zeros(images.shape[0], *images.shape[-2:], dtype=torch.long)
        for b in range(images.shape[0]):
            n = int(valid[b].sum())
            if n == 0:  # no tag: all background, as without CRF
                continue
            classes = torch.cat([torch.zeros(1, dtype=torch.long), order[b, :n].cpu() + 1])
            tagged = scores[b, :n].float().cpu()
            winners = []
            for bg in backgrounds:
                hard = torch.cat([torch.full_like(tagged[:1], bg), tagged]).argmax(0)  # ties: bg
                # IRN's label unary: the thresholded label holds CRF_LABEL_PROB, the rest share
                # the remainder, so the CRF's trust in a label does not depend on the CAM's scale.
                probs = torch.full((n + 1, *hard.shape), (1 - CRF_LABEL_PROB) / n)
                probs.scatter_(0, hard[None], CRF_LABEL_PROB)
                winners.append(classes[torch.from_numpy(crf(rgb[b], probs.numpy())).argmax(0)])
            label = winners[0]
            if t.has_band:  # winners[0]: bg at high (confident fg); winners[1]: bg at low
                label = torch.where(winners[0] > 0, winners[0], torch.where(winners[1] == 0, 0, self.ignore_index))
            labels[b] = label
        return labels.to(images.device)

    def decide(self, top: torch.Tensor, cls: torch.Tensor, thresholds: Thresholds | None = None) -> torch.Tensor:
        """Labels from :meth:`refine`'s output at ``thresholds`` (default: this labeler's)."""
        return decide(top, cls, thresholds or self.thresholds, self.ignore_index)

    # ------------------------------------------------------------------ all of it
    @torch.no_grad()
    def top_scores(
        self,
        images: torch.Tensor,
        tags: torch.Tensor,
        *,
        cam_logits: torch.Tensor | None = None,
        model: nn.Module | None = None,
        size: Sequence[int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`cams` then :meth:`refine` to ``size`` (default: the input images' size)."""
        cams = self.cams(images, tags, cam_logits=cam_logits, model=model)
        return self.refine(cams, tags, images, size=images.shape[-2:] if size is None else size)

    @torch.no_grad()
    def forward(
        self,
        images: torch.Tensor,
        tags: torch.Tensor,
        *,
        cam_logits: torch.Tensor | None = None,
        model: nn.Module | None = None,
        size: Sequence[int] | None = None,
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Pseudo labels ``[B, H, W]`` (long; 0 = background, 1..C, ``ignore_index``) at
        ``size`` (default: the input images' size). ``valid [B, H, W]`` (bool, False on crop
        padding): those pixels get ``ignore_index``, never a label."""
        labels = self.decide(*self.top_scores(images, tags, cam_logits=cam_logits, model=model, size=size))
        if valid is not None:
            labels = labels.masked_fill(~valid.to(labels.device, torch.bool), self.ignore_index)
        return labels


def build_par(cfg: DictConfig) -> PAR | None:
    """PAR from ``cam.par`` (None when ``cam.par.enabled`` is false)."""
    par = cfg.cam.par
    if not par.enabled:
        return None
    return PAR(
        dilations=tuple(par.dilations), num_iter=par.num_iter, sigma_rgb=par.sigma_rgb,
        sigma_pos=par.sigma_pos, pos_weight=par.pos_weight,
    )  # fmt: skip


def build_pseudo_labeler(cfg: DictConfig, **changes: Any) -> PseudoLabeler:
    """The labeler of a config: ``cam.*`` (thresholds, PAR, scale, online scales, upsampling)
    and ``data.mean/std/ignore_index``; ``changes`` override constructor arguments."""
    cam = cfg.cam
    args: dict[str, Any] = {
        "thresholds": Thresholds(cam.bg_threshold, cam.low, cam.high),
        "par": build_par(cfg),
        "scale": cam.par.scale,
        "cam_scales": tuple(cam.online_scales),
        "cam_flip": cam.online_flip,
        "upsample": cam.upsample,
        "mean": tuple(cfg.data.mean),
        "std": tuple(cfg.data.std),
        "ignore_index": cfg.data.ignore_index,
    }
    args.update(changes)
    return PseudoLabeler(**args)


def build_export_labeler(cfg: DictConfig, ms: bool = False, **changes: Any) -> PseudoLabeler:
    """The labeler of exported pseudo labels (``dscnet pseudo``, ``dscnet threshold --ms``).

    The online labeler of the config, at its own working scale (``cam.par.scale``: PAR's
    dilations are in working-size pixels, so the scale is part of the rule the thresholds were
    chosen for), with the CAMs averaged over ``cam.export_scales`` (and flips with
    ``cam.export_flip``) when ``ms``. ``changes`` override constructor arguments.
    """
    if ms:
        changes = {"cam_scales": tuple(cfg.cam.export_scales), "cam_flip": cfg.cam.export_flip, **changes}
    return build_pseudo_labeler(cfg, **changes)
