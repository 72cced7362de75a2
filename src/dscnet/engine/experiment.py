"""Train-then-evaluate helpers shared by ``dscnet demo`` and ``dscnet ablate``."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from dscnet.engine.distributed import DistContext
from dscnet.engine.trainer import Trainer, TrainResult


@dataclass
class RunSummary:
    """Validation mIoU of one trained run and its speed."""

    cfg: DictConfig
    result: TrainResult
    metrics: dict[str, dict[str, Any]]
    step_seconds: float
    trainer: Trainer


def train_and_evaluate(
    cfg: DictConfig, ctx: DistContext, what: tuple[str, ...] = ("seg", "cam", "pseudo")
) -> RunSummary:
    """Train ``cfg`` to the end, then evaluate ``what`` on the validation split.

    ``step_seconds`` is the median wall time of the optimisation steps taken once every
    loss term is on (after the contrastive warm-up), so that rows of an ablation compare
    the cost of their streams rather than of the warm-up.
    """
    trainer = Trainer(cfg, ctx)
    result = trainer.fit()
    metrics = trainer.run_eval("final", what=what)
    start = max(int(cfg.loss.contrast_start_step), int(cfg.train.cls_warmup_steps))
    times = [t for step, t in trainer.step_times if step > start] or [t for _, t in trainer.step_times]
    return RunSummary(cfg, result, metrics, statistics.median(times) if times else float("nan"), trainer)
