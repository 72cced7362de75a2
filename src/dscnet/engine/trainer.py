"""The training loop: one process or many (torchrun), AMP, accumulation, exact resume.

A run directory holds::

    config.yaml             the resolved config
    scalars.jsonl           one JSON object per logged step (losses, lr, speed, val metrics)
    tb/                     TensorBoard event files
    checkpoints/last.pth    written atomically every ``train.ckpt_every`` steps and at the end
    checkpoints/best.pth    the best periodic validation segmentation mIoU so far (eval.val_subset)
    eval/step_<N>/          metrics.json, metrics.txt, confusion.png of periodic evaluations
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dscnet.cam.labeler import build_pseudo_labeler
from dscnet.config import save_config
from dscnet.data.base import TransformedDataset
from dscnet.data.build import build_dataset, build_train_loader
from dscnet.data.subset import SubsetInfo, eval_subset
from dscnet.engine.checkpoint import rng_state, save_checkpoint, set_rng_state
from dscnet.engine.distributed import DistContext, barrier
from dscnet.engine.evaluate import evaluate
from dscnet.engine.health import TrainingHealth, print_warning
from dscnet.engine.optim import build_optimizer, build_scheduler
from dscnet.engine.resume import check_resumable
from dscnet.errors import CheckpointError, ConfigError, NonFiniteLossError
from dscnet.evaluation.health import HealthWarning, append_warnings
from dscnet.evaluation.io import write_metrics
from dscnet.losses.dscl import DSCLObjective
from dscnet.models.dscnet import DSCNetModel, build_model
from dscnet.models.loading import load_checkpoint
from dscnet.utils.io import writing
from dscnet.utils.progress import make_progress
from dscnet.utils.seed import seed_everything

StepHook = Callable[[int, "Trainer"], None]


@dataclass
class TrainResult:
    """What a finished run reports."""

    run_dir: Path
    steps: int
    start_step: int  # where this run started (0, or the resumed checkpoint's step)
    best_miou: float | None
    final_metrics: dict[str, Any] | None
    seconds: float
    images_per_second: float


class LossWindow:
    """Loss terms summed on the device over the steps of one logging window.

    ``pop_means`` reads them with one host-device transfer per ``train.log_every`` steps,
    instead of one ``.item()`` per term and step; a term (e.g. ``seg`` switching on after
    the warm-up) is averaged over the steps that had it.
    """

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, terms: dict[str, torch.Tensor]) -> None:
        """Add one step's detached terms."""
        for key, value in terms.items():
            self.sums[key] = self.sums[key] + value if key in self.sums else value
            self.counts[key] = self.counts.get(key, 0) + 1

    def pop_means(self) -> dict[str, float]:
        """Mean of each term over the window, as floats; empties the window."""
        keys = list(self.sums)
        values = torch.stack([self.sums[k] / self.counts[k] for k in keys]).tolist() if keys else []
        self.sums, self.counts = {}, {}
        return dict(zip(keys, values))


class Trainer:
    """Trains :class:`DSCNetModel` with :class:`DSCLObjective` from a config.

    Args:
        cfg: the full config.
        ctx: rank/world size/device from :func:`~dscnet.engine.distributed.init_distributed`.
        resume: a checkpoint path, ``"auto"`` (the run's ``last.pth`` if present) or None.
        hooks: callables ``hook(step, trainer)`` run after every optimisation step (used by
            tests to interrupt training at a given step).
    """

    def __init__(
        self,
        cfg: DictConfig,
        ctx: DistContext,
        resume: str | None = None,
        hooks: list[StepHook] | None = None,
    ) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.hooks = list(hooks or [])
        self.run_dir = Path(cfg.experiment.work_dir)
        self.device = ctx.device
        seed_everything(cfg.experiment.seed, cfg.experiment.deterministic)

        self.train_set = build_dataset(cfg, cfg.data.train_split, train=True)
        self.val_set = build_dataset(cfg, cfg.data.val_split, train=False)
        self.class_names = list(self.train_set.class_names)
        self.num_classes = len(self.class_names) - 1

        self.model: DSCNetModel = build_model(cfg, self.num_classes).to(self.device)
        if cfg.model.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # The one pseudo-label rule; the objective, the examples and the evaluation use it.
        self.labeler = build_pseudo_labeler(cfg).to(self.device)
        self.objective = DSCLObjective(cfg, self.num_classes, self.labeler).to(self.device)
        # Rank 0 watches the run's health (engine/health.py) and warns once per condition.
        self.health = TrainingHealth.for_objective(cfg, self.objective) if ctx.is_main else None
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, cfg.train.max_steps)
        self.loader = build_train_loader(
            cfg, self.train_set, rank=ctx.rank, world_size=ctx.world_size,
            pin_memory=self.device.type == "cuda",
        )  # fmt: skip
        self.sampler = self.loader.batch_sampler

        self.amp_dtype = self._amp_dtype(cfg.train.amp)
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16
        )
        self.step = 0
        self.best_miou: float | None = None
        self.step_times: list[tuple[int, float]] = []  # (step, seconds) of each optimisation step
        self._eval_sets = {cfg.data.val_split: self.val_set}
        if resume:
            self._resume(resume)
        # DDP wraps after loading so that every rank starts from the same weights.
        self.ddp_model: nn.Module = self.model
        if ctx.distributed:
            self.ddp_model = DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                # DSCLObjective touches every output, so all parameters get gradients.
                find_unused_parameters=False,
            )
        self.writer = None
        self.scalars_path = self.run_dir / "scalars.jsonl"

    # ------------------------------------------------------------------ setup helpers
    def _amp_dtype(self, amp: str) -> torch.dtype | None:
        if amp == "none":  # the schema admits none | bf16 | fp16
            return None
        if self.device.type != "cuda":
            raise ConfigError(f"train.amp={amp} needs a CUDA device (running on {self.device})")
        if amp == "bf16":
            return torch.bfloat16
        if amp == "fp16":
            return torch.float16
        raise ConfigError(f"train.amp must be none, bf16 or fp16, got '{amp}'")

    def _resume(self, resume: str) -> None:
        path = self.run_dir / "checkpoints" / "last.pth" if resume == "auto" else Path(resume)
        if resume == "auto" and not path.is_file():
            return
        ckpt = load_checkpoint(path, map_location=self.device)
        if "optimizer" not in ckpt:
            raise CheckpointError(f"{path}: holds weights only (no optimiser state); cannot resume")
        states = {"model": self.model.state_dict(), "objective": self.objective.state_dict()}
        check_resumable(path, ckpt, self.cfg, self.class_names, states)
        self.model.load_state_dict(ckpt["model"])
        self.objective.load_state_dict(ckpt["objective"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.sampler.load_state_dict(ckpt["sampler"])
        self.step = int(ckpt["step"])
        self.best_miou = ckpt.get("best_miou")
        # Older checkpoints have no step times; a resumed run then times only its new steps.
        self.step_times = [(int(step), float(sec)) for step, sec in ckpt.get("step_times", [])]
        set_rng_state(ckpt["rng"][min(self.ctx.rank, len(ckpt["rng"]) - 1)])

    def checkpoint_state(self) -> dict[str, Any]:
        """Everything needed to continue exactly from the current step."""
        return {
            "model": self.model.state_dict(),
            "objective": self.objective.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            # Batches consumed, not the sampler's own counter: loader workers pre-fetch ahead.
            "sampler": {
                "step": self.step * self.cfg.train.grad_accum,
                "seed": self.sampler.state_dict()["seed"],
            },
            "step": self.step,
            "best_miou": self.best_miou,
            "step_times": list(self.step_times),
            "config": self.cfg,
            "class_names": self.class_names,
        }

    def save(self, name: str = "last.pth") -> Path | None:
        """Atomically write a checkpoint (rank 0 writes; every rank's RNG state is kept)."""
        states = [rng_state()]
        if self.ctx.distributed:
            gathered: list[Any] = [None] * self.ctx.world_size
            torch.distributed.all_gather_object(gathered, states[0])
            states = gathered
        if not self.ctx.is_main:
            return None
        return save_checkpoint(self.run_dir / "checkpoints" / name, rng=states, **self.checkpoint_state())

    # ------------------------------------------------------------------ logging
    def _log(self, values: dict[str, float]) -> None:
        if not self.ctx.is_main:
            return
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.run_dir / "tb"))
        for key, value in values.items():
            self.writer.add_scalar(key, value, self.step)
        with writing(self.scalars_path), self.scalars_path.open("a") as fh:
            fh.write(json.dumps({"step": self.step, **values}) + "\n")

    def _warn(self, notes: list[HealthWarning]) -> None:
        """Print new health warnings and record them in ``scalars.jsonl`` (rank 0)."""
        for note in notes:
            print_warning(note.message)
        append_warnings(self.scalars_path, self.step, notes)

    # ------------------------------------------------------------------ the loop
    def _train_step(self, batch_iter) -> dict[str, torch.Tensor]:
        """One optimisation step; returns its loss terms as detached device tensors (read by
        the host only when logged: each read would wait for the GPU)."""
        accum = self.cfg.train.grad_accum
        self.optimizer.zero_grad(set_to_none=True)
        logged: dict[str, torch.Tensor] = {}
        for micro in range(accum):
            batch = next(batch_iter)
            images = batch["image"].to(self.device, non_blocking=True)
            tags = batch["tags"].to(self.device, non_blocking=True)
            masks = batch["mask"].to(self.device, non_blocking=True)
            valid = batch["valid"].to(self.device, non_blocking=True) if "valid" in batch else None
            sync = micro == accum - 1 or not self.ctx.distributed
            ctx_sync = nullcontext() if sync else self.ddp_model.no_sync()
            autocast = (
                torch.autocast(self.device.type, dtype=self.amp_dtype)
                if self.amp_dtype is not None
                else nullcontext()
            )
            with ctx_sync:
                labeler = self.labeler if self.objective.needs_labels(self.step) else None
                with autocast:
                    out = self.ddp_model(images, tags, valid, labeler)
                loss = self.objective(out, self.model, images, tags, self.step, masks=masks, valid=valid)
                if not torch.isfinite(loss.total):
                    terms = ", ".join(f"{k}={v.item():.4g}" for k, v in loss.terms.items())
                    raise NonFiniteLossError(
                        f"non-finite loss at step {self.step} ({terms}); training stopped. "
                        f"The last good checkpoint is kept in {self.run_dir / 'checkpoints'}. "
                        "Lower optim.lr, set train.grad_clip, or try train.amp=bf16 instead of fp16."
                    )
                self.scaler.scale(loss.total / accum).backward()
            if self.health is not None:
                self.health.update(self.step, out, tags, loss, valid)
            for key, value in (*loss.terms.items(), ("total", loss.total)):
                logged[f"loss/{key}"] = logged.get(f"loss/{key}", 0.0) + value.detach().float() / accum
        if self.cfg.train.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        return logged

    def eval_split(self, mode: str) -> str:
        """The split ``mode`` is scored on: segmentation on ``data.val_split``; CAMs and
        pseudo labels on ``eval.cam_split`` when set (the field reports them on the train
        split, docs/METHOD.md §4), else on the validation split too."""
        cam_split = self.cfg.eval.cam_split
        if mode in ("cam", "pseudo") and cam_split:
            return cam_split
        return self.cfg.data.val_split

    def _eval_set(self, split: str) -> TransformedDataset:
        if split not in self._eval_sets:
            self._eval_sets[split] = build_dataset(self.cfg, split, train=False)
        return self._eval_sets[split]

    def eval_images(self, mode: str, periodic: bool = False) -> tuple[TransformedDataset, SubsetInfo]:
        """The images ``mode`` is scored on: :meth:`eval_split`, restricted for a ``periodic``
        evaluation to ``eval.val_subset`` images (the first ones, or seeded with
        ``eval.val_subset_seed``); the final evaluation always scores the whole split."""
        split = self.eval_split(mode)
        size = self.cfg.eval.val_subset if periodic else None
        return eval_subset(self._eval_set(split), split, size, self.cfg.eval.val_subset_seed)

    def run_eval(
        self, tag: str, what: tuple[str, ...] = ("seg",), periodic: bool = False
    ) -> dict[str, dict[str, Any]]:
        """Evaluate ``what`` (each on :meth:`eval_images`); rank 0 writes ``eval/<tag>/<what>/``,
        whose title and ``extra`` name the split and the images scored.

        Returns ``{}`` when the validation split has no masks (nothing to score against);
        a mode whose split has no masks is left out.
        """
        results: dict[str, dict[str, Any]] = {}
        if not self.val_set.has_masks:
            return results
        for mode in what:
            dataset, images = self.eval_images(mode, periodic)
            if not dataset.has_masks:
                continue
            res = evaluate(
                self.model,
                dataset,
                self.cfg,
                what=mode,
                scales=tuple(self.cfg.eval.scales),
                flip=self.cfg.eval.flip,
                rank=self.ctx.rank,
                world_size=self.ctx.world_size,
                device=self.device,
            )
            results[mode] = res.metrics
            if self.health is not None:
                self._warn(self.health.check_eval(self.step, mode, images.split, res.metrics))
            if self.ctx.is_main:
                write_metrics(
                    self.run_dir / "eval" / tag / mode,
                    res.metrics,
                    self.class_names,
                    res.confusion.matrix.cpu().numpy(),
                    title=f"{mode} mIoU on {images.describe()} at step {self.step}",
                    extra={**res.extra, **images.as_dict(), "step": self.step},
                )
        return results

    def fit(self) -> TrainResult:
        """Train until ``train.max_steps``; returns the run summary."""
        cfg = self.cfg
        max_steps = cfg.train.max_steps
        if self.ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
        barrier()
        self.model.train()
        batch_iter = iter(self.loader)
        batch_images = (
            cfg.data.sampler.groups_per_batch
            * cfg.data.sampler.group_size
            * cfg.train.grad_accum
            * self.ctx.world_size
        )
        start_step, start = self.step, time.perf_counter()
        window_start, window_steps = start, 0
        window_losses = LossWindow()
        final_metrics = None
        show = cfg.train.progress and self.ctx.is_main
        bar = make_progress() if show else None
        with bar or nullcontext():
            task = bar.add_task("train", total=max_steps, completed=self.step, info="") if bar else None
            while self.step < max_steps:
                t0 = time.perf_counter()
                window_losses.add(self._train_step(batch_iter))
                self.step_times.append((self.step, time.perf_counter() - t0))
                window_steps += 1
                for hook in self.hooks:
                    hook(self.step, self)
                if self.step % cfg.train.log_every == 0 or self.step == max_steps:
                    now = time.perf_counter()
                    ips = window_steps * batch_images / max(now - window_start, 1e-9)
                    window_start, window_steps = now, 0
                    logged = window_losses.pop_means()
                    logged["lr"] = self.scheduler.get_last_lr()[0]
                    logged["speed/images_per_s"] = ips
                    notes: list[HealthWarning] = []
                    if self.health is not None:
                        health, notes = self.health.report(self.step, final=self.step == max_steps)
                        logged.update(health)
                    self._log(logged)
                    self._warn(notes)
                    if bar:
                        info = " ".join(f"{k[5:]}={v:.3f}" for k, v in logged.items() if k.startswith("loss/"))
                        bar.update(task, info=f"{info} {ips:.1f} img/s")
                if bar:
                    bar.update(task, completed=self.step)
                due = self.step % cfg.train.eval_every == 0 or self.step == max_steps
                # run_eval returns {} for a validation split without masks.
                metrics = self.run_eval(f"step_{self.step}", periodic=True) if due else {}
                if metrics:
                    miou = metrics["seg"]["miou"]
                    # A subset's curve gets its own name: it is not the number of the full split.
                    scored = self.eval_images("seg", periodic=True)[1]
                    prefix = "val_subset" if scored.is_subset else "val"
                    self._log({f"{prefix}/seg_miou": miou, f"{prefix}/images": scored.images})
                    final_metrics = metrics
                    if self.best_miou is None or miou > self.best_miou:
                        self.best_miou = miou
                        self.save("best.pth")
                if self.step % cfg.train.ckpt_every == 0 or self.step == max_steps:
                    self.save("last.pth")
        seconds = time.perf_counter() - start
        steps_done = self.step - start_step
        if self.writer is not None:
            self.writer.close()
        return TrainResult(
            run_dir=self.run_dir,
            steps=self.step,
            start_step=start_step,
            best_miou=self.best_miou,
            final_metrics=final_metrics,
            seconds=seconds,
            images_per_second=steps_done * batch_images / max(seconds, 1e-9) if steps_done else math.nan,
        )
