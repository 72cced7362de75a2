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

from dscnet.engine.evaluate import evaluate
from dscnet.errors import ConfigError

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
    """Score ``model`` on ``dataset`` at every background threshold.

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
    rows = []
    for t in thresholds:
        swept = with_threshold(cfg, float(t), band)
        res = evaluate(model, dataset, swept, what=what, device=device, progress=progress)
        row = {"bg_threshold": float(t), "low": swept.cam.low, "high": swept.cam.high}
        row.update({k: res.metrics[k] for k in ("miou", "confident_miou", "coverage") if k in res.metrics})
        rows.append(row)
    return rows
