"""Choose the background threshold of the pseudo labels on a split with masks.

The background score ``cam.bg_threshold`` (AFA: 0.45 on VOC) decides how far the pseudo
labels reach, and its best value depends on the backbone and the data: ImageNet-pretrained
CNN CAMs are peaky, CAMs learned from scratch are flat. IRN and PSA pick it on the train
split; :func:`sweep_bg_threshold` does that with the exact evaluation protocol of
:func:`~dscnet.engine.evaluate.evaluate`: for every candidate ``t`` the uncertain band moves
with it, ``(t - band, t + band)`` clipped to ``[0, 1]``, as the defaults (0.35, 0.45, 0.55)
do with ``band = 0.1``.

Pick the threshold on the *baseline's* checkpoints (or on those of every row you compare),
never on the method you want to win: the choice is then fair to the baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from dscnet.cam.cams import cams_with_background
from dscnet.data.build import build_eval_loader
from dscnet.engine.evaluate import LabelScore
from dscnet.errors import ConfigError
from dscnet.inference.multiscale import cam_maps
from dscnet.losses.dscl import DSCLObjective
from dscnet.utils.progress import progress_iter

SWEEP_MODES = ("pseudo", "cam")


def band_around(threshold: float, band: float) -> tuple[float, float]:
    """The uncertain band ``(low, high)`` around ``threshold``, clipped to ``[0, 1]``.

    ``band = 0`` gives ``low == high``, which turns the band off (plain threshold rule).

    Raises:
        ConfigError: ``threshold`` outside ``[0, 1]`` or a negative ``band``.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"background threshold {threshold} lies outside [0, 1] (CAMs are max-normalised)")
    if band < 0:
        raise ConfigError(f"the uncertain band must be >= 0, got {band}")
    return max(0.0, threshold - band), min(1.0, threshold + band)


def with_threshold(cfg: DictConfig, threshold: float, band: float) -> DictConfig:
    """A copy of ``cfg`` whose ``cam.bg_threshold``, ``cam.low`` and ``cam.high`` follow ``threshold``."""
    low, high = band_around(threshold, band)
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    out.cam.bg_threshold, out.cam.low, out.cam.high = float(threshold), low, high
    return out


@torch.no_grad()
def sweep_bg_threshold(
    model: nn.Module,
    dataset,
    cfg: DictConfig,
    thresholds: Sequence[float],
    band: float = 0.1,
    what: str = "pseudo",
    device: torch.device | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Score ``model`` on ``dataset`` at every background threshold, in one pass.

    Each batch's CAMs (and, for ``pseudo``, their PAR refinement) are computed once; only the
    threshold decision runs per candidate. The scores equal those of
    :func:`~dscnet.engine.evaluate.evaluate` on :func:`with_threshold`'s config (tested).

    Args:
        model, dataset, cfg: as for :func:`~dscnet.engine.evaluate.evaluate`.
        thresholds: candidate background scores, each in ``[0, 1]``.
        band: half-width of the uncertain band around each threshold (``pseudo`` only; the
            ``cam`` protocol has no band).
        what: ``pseudo`` (CAM -> PAR -> thresholds, the training targets) or ``cam``.

    Returns:
        One dict per threshold, in the order given: ``bg_threshold``, ``low``, ``high``,
        ``miou`` and, for ``pseudo``, ``confident_miou`` and ``coverage``.
    """
    if what not in SWEEP_MODES:
        raise ConfigError(f"unknown sweep mode '{what}' (choose from {', '.join(SWEEP_MODES)})")
    if not thresholds:
        raise ConfigError("no background threshold to sweep")
    candidates = [(float(t), *band_around(float(t), band)) for t in thresholds]
    device = device or next(model.parameters()).device
    ignore_index = int(cfg.data.ignore_index)
    pseudo = what == "pseudo"
    scores = [
        LabelScore(model.num_classes + 1, ignore_index, device, uncertain=pseudo) for _ in candidates
    ]
    objective = DSCLObjective(cfg, model.num_classes).to(device) if pseudo else None
    was_training = model.training
    model.eval()
    loader = build_eval_loader(cfg, dataset)
    for batch in progress_iter(loader, f"sweep {what}", enabled=progress):
        images, masks, tags = (batch[k].to(device) for k in ("image", "mask", "tags"))
        if pseudo:
            top, cls = objective.top_scores(model.cam(images), images, tags)
            for score, t in zip(scores, candidates):
                score.update(objective.labels_from_top(top, cls, tuple(images.shape[-2:]), t), masks)
        else:
            cams = cam_maps(model, images, tags)
            for score, (t, _, _) in zip(scores, candidates):
                score.update(cams_with_background(cams, t).argmax(1), masks)
    model.train(was_training)
    rows = []
    for score, (t, low, high) in zip(scores, candidates):
        metrics = score.compute()
        row = {"bg_threshold": t, "low": low, "high": high}
        row.update({k: metrics[k] for k in ("miou", "confident_miou", "coverage") if k in metrics})
        rows.append(row)
    return rows
