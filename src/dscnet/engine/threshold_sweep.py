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

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from dscnet.cam.labeler import PseudoLabeler, Thresholds
from dscnet.data.build import build_eval_loader
from dscnet.engine.evaluate import LabelScore, eval_labeler
from dscnet.errors import ConfigError
from dscnet.utils.progress import progress_iter

SWEEP_MODES = ("pseudo", "cam")


def with_threshold(cfg: DictConfig, threshold: float, band: float) -> DictConfig:
    """A copy of ``cfg`` whose ``cam.bg_threshold``, ``cam.low`` and ``cam.high`` follow ``threshold``."""
    t = Thresholds.around(threshold, band)
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    out.cam.bg_threshold, out.cam.low, out.cam.high = t.bg, t.low, t.high
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
    labeler: PseudoLabeler | None = None,
    crf: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
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
        labeler: the rule to sweep (default: the one ``evaluate`` scores for ``what``); e.g.
            :func:`~dscnet.cam.labeler.build_export_labeler` for the exported labels.
        crf: ``crf(rgb, probs) -> probs``: sweep the CRF rule of the export
            (:meth:`~dscnet.cam.labeler.PseudoLabeler.crf_decide`, one CRF run per image and
            candidate) instead of the thresholds alone.

    Returns:
        One dict per threshold, in the order given: ``bg_threshold``, ``low``, ``high``,
        ``miou`` and, for ``pseudo``, ``confident_miou`` and ``coverage``.
    """
    if what not in SWEEP_MODES:
        raise ConfigError(f"unknown sweep mode '{what}' (choose from {', '.join(SWEEP_MODES)})")
    if not thresholds:
        raise ConfigError("no background threshold to sweep")
    pseudo = what == "pseudo"
    # The cam protocol has no band: its candidates differ in the background score only.
    candidates = [Thresholds.around(float(t), band if pseudo else 0.0) for t in thresholds]
    device = device or next(model.parameters()).device
    ignore_index = cfg.data.ignore_index
    scores = [
        LabelScore(model.num_classes + 1, ignore_index, device, uncertain=pseudo) for _ in candidates
    ]
    labeler = (labeler or eval_labeler(cfg, what)).to(device)
    was_training = model.training
    model.eval()
    loader = build_eval_loader(cfg, dataset)
    for groups in progress_iter(loader, f"sweep {what}", enabled=progress):
        for batch in groups:
            images, masks, tags = (batch[k].to(device) for k in ("image", "mask", "tags"))
            # CAMs and PAR once per batch; only the decision runs per candidate.
            if crf is not None:
                cams = labeler.cams(images, tags, model=model)
                refined = labeler.refined_channels(cams, tags, images, images.shape[-2:])
                for score, t in zip(scores, candidates):
                    score.update(labeler.crf_decide(images, *refined, crf, thresholds=t), masks)
                continue
            top, cls = labeler.top_scores(images, tags, model=model)
            for score, t in zip(scores, candidates):
                score.update(labeler.decide(top, cls, t), masks)
    model.train(was_training)
    rows = []
    for score, t in zip(scores, candidates):
        metrics = score.compute()
        row = {"bg_threshold": t.bg, "low": t.low, "high": t.high}
        row.update({k: metrics[k] for k in ("miou", "confident_miou", "coverage") if k in metrics})
        rows.append(row)
    return rows
