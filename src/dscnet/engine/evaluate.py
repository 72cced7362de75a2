"""Evaluation loops: segmentation, CAMs and refined pseudo labels, streamed over a split.

Nothing is written per image: predictions go straight into a confusion matrix, which is
summed across ranks under DDP. What each mode reads:

- ``seg``: the segmentation head only (multi-scale/flip/CRF as asked). Never reads tags.
- ``cam``: CAMs of the **ground-truth tags** with the background threshold — the field's
  CAM quality protocol (train-set CAM/pseudo-label numbers use the image tags).
- ``pseudo``: the online pseudo labels (CAM → PAR → thresholds) built from GT tags, i.e. what
  the segmentation head is trained on. Uncertain pixels count as background in ``miou``;
  ``confident_miou`` scores only the confident pixels and ``coverage`` is their share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from dscnet.cam.cams import cams_with_background
from dscnet.data.build import build_eval_loader
from dscnet.data.transforms import denormalize
from dscnet.evaluation.confusion import ConfusionMatrix
from dscnet.inference.multiscale import cam_maps, segment_probs
from dscnet.losses.dscl import DSCLObjective
from dscnet.utils.progress import progress_iter

EVAL_MODES = ("seg", "cam", "pseudo")


@dataclass
class EvalResult:
    """Metrics of one evaluation and the confusion matrix they came from."""

    what: str
    metrics: dict[str, Any]
    confusion: ConfusionMatrix
    extra: dict[str, Any] = field(default_factory=dict)


class LabelScore:
    """Confusion matrix of one evaluation, summed across ranks by :meth:`compute`.

    With ``uncertain=True`` (pseudo labels) predictions may hold ``ignore_index``: those
    pixels count as background in ``miou``, are left out of ``confident_miou``, and
    ``coverage`` is the share of labelled pixels that are not uncertain.
    """

    def __init__(self, num_classes: int, ignore_index: int, device: torch.device, uncertain: bool = False) -> None:
        self.ignore_index = ignore_index
        self.uncertain = uncertain
        self.confusion = ConfusionMatrix(num_classes, ignore_index=ignore_index, device=device)
        self.confident = ConfusionMatrix(num_classes, ignore_index=ignore_index, device=device)
        self.counts = torch.zeros(2, dtype=torch.float64, device=device)  # covered, labelled

    def update(self, pred: torch.Tensor, masks: torch.Tensor) -> None:
        if not self.uncertain:
            self.confusion.update(pred, masks)
            return
        uncertain = pred == self.ignore_index
        pred = pred.masked_fill(uncertain, 0)
        self.confusion.update(pred, masks)
        self.confident.update(pred, masks.masked_fill(uncertain, self.ignore_index))
        valid = masks != self.ignore_index
        self.counts[0] += (valid & ~uncertain).sum()
        self.counts[1] += valid.sum()

    def compute(self) -> dict[str, Any]:
        """``ConfusionMatrix.compute()`` over all ranks, plus ``confident_miou`` and
        ``coverage`` for pseudo labels."""
        self.confusion.all_reduce()
        metrics = self.confusion.compute()
        if self.uncertain:
            self.confident.all_reduce()
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.all_reduce(self.counts)
            metrics["confident_miou"] = self.confident.compute()["miou"]
            metrics["coverage"] = float(self.counts[0] / self.counts[1].clamp(min=1))
        return metrics


def _crf_refine(images: torch.Tensor, probs: torch.Tensor, cfg: DictConfig) -> torch.Tensor:
    from dscnet.inference.crf import crf_map

    rgb = (denormalize(images.float(), tuple(cfg.data.mean), tuple(cfg.data.std)) * 255).round()
    rgb_np = rgb.clamp(0, 255).byte().permute(0, 2, 3, 1).cpu().numpy()
    params = dict(cfg.eval.crf)
    refined = crf_map(list(rgb_np), list(probs.float().cpu().numpy()), params)
    return torch.from_numpy(np.stack(refined)).to(probs.device)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset,
    cfg: DictConfig,
    what: str = "seg",
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    crf: bool = False,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | None = None,
    progress: bool = False,
) -> EvalResult:
    """Evaluate ``model`` on ``dataset`` (a TransformedDataset with masks).

    Args:
        what: ``seg``, ``cam`` or ``pseudo`` (see the module docstring).
        scales, flip: multi-scale and flip test-time augmentation.
        crf: dense-CRF post-processing of the segmentation probabilities (``seg`` only).
    """
    if what not in EVAL_MODES:
        raise ValueError(f"unknown evaluation mode '{what}' (choose from {', '.join(EVAL_MODES)})")
    device = device or next(model.parameters()).device
    num_classes = model.num_classes + 1
    score = LabelScore(num_classes, int(cfg.data.ignore_index), device, uncertain=what == "pseudo")
    objective = DSCLObjective(cfg, model.num_classes).to(device) if what == "pseudo" else None
    was_training = model.training
    model.eval()
    loader = build_eval_loader(
        cfg, dataset, rank=rank, world_size=world_size, pin_memory=device.type == "cuda"
    )
    for batch in progress_iter(loader, f"eval {what}", enabled=progress and rank == 0):
        images = batch["image"].to(device, non_blocking=True)
        masks = batch["mask"].to(device, non_blocking=True)
        tags = batch["tags"].to(device, non_blocking=True)
        if what == "seg":
            probs = segment_probs(model, images, scales=scales, flip=flip)
            if crf:
                probs = _crf_refine(images, probs, cfg)
            score.update(probs.argmax(1), masks)
        elif what == "cam":
            cams = cam_maps(model, images, tags, scales=scales, flip=flip)
            score.update(cams_with_background(cams, float(cfg.cam.bg_threshold)).argmax(1), masks)
        else:
            score.update(objective.pseudo_labels(model.cam(images), images, tags), masks)
    model.train(was_training)

    extra: dict[str, Any] = {"what": what, "scales": list(scales), "flip": flip, "crf": crf}
    return EvalResult(what, score.compute(), score.confusion, extra)
