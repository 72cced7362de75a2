"""Train-then-evaluate helpers shared by ``dscnet demo`` and ``dscnet ablate``."""

from __future__ import annotations

import json
import multiprocessing as mp
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from omegaconf import DictConfig

from dscnet.engine.distributed import DistContext, init_distributed
from dscnet.engine.trainer import Trainer, TrainResult
from dscnet.errors import ConfigError


@dataclass
class RunSummary:
    """Validation mIoU of one trained run and its speed."""

    cfg: DictConfig
    result: TrainResult
    metrics: dict[str, dict[str, Any]]
    step_seconds: float
    trainer: Trainer


class Job(NamedTuple):
    """One run of a demo or an ablation, as plain data (picklable for worker processes).

    ``resume="auto"`` continues the run from its ``last.pth`` when there is one; a finished
    run is then only evaluated again, not retrained.
    """

    cfg: dict
    name: str
    seed: int
    what: tuple[str, ...]
    resume: str | None = None


def _steps_after_warmup(cfg: DictConfig) -> int:
    return max(cfg.loss.contrast_start_step, cfg.train.cls_warmup_steps)


def step_seconds_from_scalars(run_dir: str | Path, cfg: DictConfig) -> float:
    """Median step time after the warm-up, from the logged ``speed/images_per_s`` windows.

    For runs whose checkpoint predates the recorded per-step times: each log window's rate
    gives its mean step time (batch images / rate). NaN when nothing was logged.
    """
    path = Path(run_dir) / "scalars.jsonl"
    if not path.is_file():
        return float("nan")
    s = cfg.data.sampler
    batch_images = s.groups_per_batch * s.group_size * cfg.train.grad_accum
    start = _steps_after_warmup(cfg)
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    speed = [(r["step"], r["speed/images_per_s"]) for r in rows if "speed/images_per_s" in r]
    chosen = [rate for step, rate in speed if step > start] or [rate for _, rate in speed]
    return statistics.median(batch_images / rate for rate in chosen) if chosen else float("nan")


def train_and_evaluate(
    cfg: DictConfig,
    ctx: DistContext,
    what: tuple[str, ...] = ("seg", "cam", "pseudo"),
    resume: str | None = None,
) -> RunSummary:
    """Train ``cfg`` to the end (continuing from ``resume``), then evaluate ``what``.

    Segmentation is scored on the validation split, CAMs and pseudo labels on
    ``eval.cam_split`` (see :meth:`Trainer.eval_split`). ``step_seconds`` is the median wall
    time of the optimisation steps taken once every loss term is on (after the contrastive
    warm-up), so that rows of an ablation compare the cost of their streams rather than of
    the warm-up; a resumed run's times come from its checkpoint (or, for checkpoints that
    predate them, from its logged speed).
    """
    trainer = Trainer(cfg, ctx, resume=resume)
    result = trainer.fit()
    metrics = trainer.run_eval("final", what=what)
    start = _steps_after_warmup(cfg)
    times = [t for step, t in trainer.step_times if step > start] or [t for _, t in trainer.step_times]
    step_seconds = statistics.median(times) if times else step_seconds_from_scalars(trainer.run_dir, cfg)
    return RunSummary(cfg, result, metrics, step_seconds, trainer)


def train_job(job: Job | tuple) -> dict[str, Any]:
    """Train and evaluate one config given as a plain dict; picklable for worker processes.

    ``job`` is a :class:`Job` (or a plain tuple of its fields). Returns the run directory,
    the median step time and ``{what: metrics}``. In a worker process torch uses one
    thread: parallel runs on a small CPU only contend with more.
    """
    from omegaconf import OmegaConf

    cfg_dict, name, seed, what, resume = Job(*job)
    if mp.current_process().name != "MainProcess":
        torch.set_num_threads(1)
    cfg = OmegaConf.create(cfg_dict)
    summary = train_and_evaluate(cfg, init_distributed(cfg.experiment.device), what=what, resume=resume)
    # run_eval leaves out every mode whose split has no masks (all of them without val masks).
    missing = [mode for mode in what if mode not in summary.metrics]
    if missing:
        split = summary.trainer.eval_split(missing[0])
        key = "data.val_split" if split == cfg.data.val_split else "eval.cam_split"
        raise ConfigError(
            f"run '{name}': split '{split}' ({key}) has no masks, so {'/'.join(missing)} mIoU "
            "cannot be scored; demo and ablate need ground truth there (eval.cam_split=null "
            "scores CAMs and pseudo labels on the validation split)"
        )
    return {
        "name": name,
        "seed": seed,
        "run_dir": str(summary.result.run_dir),
        "step_seconds": summary.step_seconds,
        "images_per_second": summary.result.images_per_second,
        "seconds": summary.result.seconds,
        "metrics": summary.metrics,
        "splits": {mode: summary.trainer.eval_split(mode) for mode in summary.metrics},
    }


def run_jobs(
    jobs: list[Job] | list[tuple],
    workers: int = 1,
    on_done: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run :func:`train_job` for every job, ``workers`` at a time in spawned processes."""
    done: list[dict[str, Any]] = []
    if workers > 1 and len(jobs) > 1:
        ctx = mp.get_context("spawn")
        with ctx.Pool(min(workers, len(jobs)), maxtasksperchild=1) as pool:
            for res in pool.imap_unordered(train_job, jobs):
                done.append(res)
                if on_done:
                    on_done(res)
    else:
        for job in jobs:
            done.append(train_job(job))
            if on_done:
                on_done(done[-1])
    return done


class RunView:
    """The parts of a :class:`Trainer` that the picture writers read, rebuilt from a run dir."""

    def __init__(self, run_dir: str | Path, checkpoint: str = "last.pth") -> None:
        from dscnet.cam.labeler import build_pseudo_labeler
        from dscnet.data.build import build_dataset
        from dscnet.models.loading import load_model_from_checkpoint

        self.run_dir = Path(run_dir)
        self.model, self.cfg, self.class_names = load_model_from_checkpoint(
            self.run_dir / "checkpoints" / checkpoint
        )
        self.device = torch.device("cpu")
        self.labeler = build_pseudo_labeler(self.cfg)
        self.val_set = build_dataset(self.cfg, self.cfg.data.val_split, train=False)
