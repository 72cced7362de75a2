"""Evaluation loops: segmentation, CAMs and refined pseudo labels, streamed over a split.

Nothing is written per image: predictions go straight into a confusion matrix, which is
summed across ranks under DDP. Images are never padded: the loader batches only images of
equal size, so a score does not depend on ``eval.batch_size`` or on which images share a
batch, and equals what ``dscnet predict`` gives for the same images. What each mode reads:

- ``seg``: the segmentation head only (multi-scale/flip/CRF as asked). Never reads tags.
- ``cam``: CAMs of the **ground-truth tags** with the background threshold — the field's
  CAM quality protocol (train-set CAM/pseudo-label numbers use the image tags).
- ``pseudo``: the online pseudo labels (the config's :class:`~dscnet.cam.labeler.PseudoLabeler`:
  CAM → PAR → thresholds) built from GT tags, i.e. what the segmentation head is trained on.
  Uncertain pixels count as background in ``miou``; ``confident_miou`` scores only the
  confident pixels and ``coverage`` is their share.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from dscnet.cam.labeler import PseudoLabeler, build_pseudo_labeler
from dscnet.data.build import build_eval_loader
from dscnet.data.transforms import denormalize
from dscnet.evaluation.confusion import ConfusionMatrix
from dscnet.evaluation.score import LabelScore
from dscnet.inference.multiscale import segment_probs
from dscnet.utils.progress import progress_iter

EVAL_MODES = ("seg", "cam", "pseudo")


@dataclass
class EvalResult:
    """Metrics of one evaluation and the confusion matrix they came from."""

    what: str
    metrics: dict[str, Any]
    confusion: ConfusionMatrix
    extra: dict[str, Any] = field(default_factory=dict)


def eval_labeler(
    cfg: DictConfig, what: str, scales: Sequence[float] = (1.0,), flip: bool = False
) -> PseudoLabeler | None:
    """The labeler behind a CAM or pseudo-label score (None for ``seg``).

    ``pseudo``: the training labeler itself (its working scale and online CAM scales), or
    with ``scales``/``flip`` when multi-scale is asked. ``cam``: the CAM protocol, i.e. the
    same rule at full size without PAR and band, CAMs over ``scales``/``flip``.
    """
    if what == "seg":
        return None
    labeler = build_pseudo_labeler(cfg)
    if what == "cam":
        return labeler.variant(refine=False, band=False, scale=1.0, cam_scales=scales, cam_flip=flip)
    if (tuple(scales), bool(flip)) != ((1.0,), False):
        return labeler.variant(cam_scales=scales, cam_flip=flip)
    return labeler


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
    on_batch: Callable[[list[str], torch.Tensor], None] | None = None,
) -> EvalResult:
    """Evaluate ``model`` on ``dataset`` (a TransformedDataset with masks).

    Args:
        what: ``seg``, ``cam`` or ``pseudo`` (see the module docstring).
        scales, flip: multi-scale and flip test-time augmentation.
        crf: dense-CRF post-processing of the segmentation probabilities (``seg`` only).
        on_batch: called with the ids and the predicted labels ``[B, H, W]`` of every batch
            (images of one size), e.g. to keep or write predictions; nothing is kept otherwise.
    """
    if what not in EVAL_MODES:
        raise ValueError(f"unknown evaluation mode '{what}' (choose from {', '.join(EVAL_MODES)})")
    device = device or next(model.parameters()).device
    num_classes = model.num_classes + 1
    score = LabelScore(num_classes, cfg.data.ignore_index, device, uncertain=what == "pseudo")
    labeler = eval_labeler(cfg, what, scales, flip)
    if labeler is not None:
        labeler = labeler.to(device)
    was_training = model.training
    model.eval()
    loader = build_eval_loader(
        cfg, dataset, rank=rank, world_size=world_size, pin_memory=device.type == "cuda"
    )
    for groups in progress_iter(loader, f"eval {what}", enabled=progress and rank == 0):
        for batch in groups:  # one batch per image size: nothing is padded
            images = batch["image"].to(device, non_blocking=True)
            masks = batch["mask"].to(device, non_blocking=True)
            if labeler is None:
                probs = segment_probs(model, images, scales=scales, flip=flip)
                if crf:
                    probs = _crf_refine(images, probs, cfg)
                pred = probs.argmax(1)
            else:
                pred = labeler(images, batch["tags"].to(device, non_blocking=True), model=model)
            score.update(pred, masks)
            if on_batch is not None:
                on_batch(list(batch["id"]), pred)
    model.train(was_training)

    extra: dict[str, Any] = {"what": what, "scales": list(scales), "flip": flip, "crf": crf}
    return EvalResult(what, score.compute(), score.confusion, extra)
