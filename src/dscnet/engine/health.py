"""Training health: notice a run that never took off, and say so (issue 17).

A run whose classifier never learns the tags still finishes normally, writes checkpoints and
prints numbers (an all-background segmentation scores ``1/(C+1)`` of the background IoU as
mIoU). :class:`TrainingHealth` watches the signals that show it early, fed once per
(micro-)batch with detached tensors. Everything it does per step stays on the device (a few
sums, no ``.item()``); it reads the sums back only when the trainer asks for a decision at a
log step, once a window of ``train.health.window`` steps is complete (and at the last step).

Conditions, each reported once per run (``HealthWarning.condition``):

- ``cls_constant``: after the warm-up, ``L_cls`` over the window is at least
  ``cls_loss_ratio`` x the loss of the best *constant* predictor on the same batches. For the
  multilabel soft-margin loss that predictor outputs ``logit(p_c)`` for every image, ``p_c``
  being class ``c``'s tag frequency, and its loss is the mean binary entropy of the ``p_c``
  (:func:`constant_predictor_loss`). The frequencies are those of the window's batches, not of
  the dataset: the group sampler draws classes uniformly (``data.sampler.class_sampling``), so
  the batches see rare classes more often than the dataset holds them.
- ``cls_f1``: after the warm-up, the image-level micro F1 of the classifier on the training
  batches (a tag is predicted where its logit is > 0, i.e. sigmoid > 0.5) is below ``min_f1``.
- ``pseudo_ignore`` / ``pseudo_background``: the online pseudo labels hold at least
  ``max_ignore_share`` ignore pixels, or less than ``min_fg_share`` foreground (of the pixels
  that come from the image, crop padding left out).
- ``seg_background``: one window after ``L_seg`` switched on, the segmentation head predicts
  less than ``min_fg_share`` foreground on the training batches.
- ``loss_dominance``: one weighted loss term is more than ``dominance_ratio`` x the sum of all
  the others (the others then hardly steer the shared backbone).
- ``eval_<mode>_background``: an evaluation predicts less than ``eval_fg_ratio`` x the
  foreground share of the ground truth (:func:`background_message`; also used by
  ``dscnet eval`` and the end-of-training summary).

Every message names the numbers it saw and the likely levers (:func:`levers`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig

from dscnet.evaluation.health import (
    HealthWarning,
    background_message,
    foreground_shares,
)

if TYPE_CHECKING:
    from dscnet.losses.dscl import DSCLObjective, LossOutput

# Slots of TrainingHealth's on-device scalar accumulator (counts known from shapes alone,
# images and segmentation pixels, are kept on the host: no host-to-device copy per step).
_CLS_SUM, _TP, _PRED_POS, _POS, _PL_BG, _PL_IGN, _PL_PIX, _SEG_FG = range(8)
_NUM_SLOTS = 8
# Loss terms with a weight key loss.<term>.weight (L_cls has weight 1 and no key).
_WEIGHTED_TERMS = ("seg", "pgcl", "sgcl", "cross")


@dataclass(frozen=True)
class HealthConfig:
    """The thresholds of ``train.health`` (see ``base.yaml`` for each key's meaning)."""

    enabled: bool = True
    window: int = 50
    warmup_steps: int = 0
    cls_loss_ratio: float = 0.95
    min_f1: float = 0.1
    min_fg_share: float = 0.01
    max_ignore_share: float = 0.95
    dominance_ratio: float = 100.0
    eval_fg_ratio: float = 0.1

    @classmethod
    def from_config(cls, cfg: DictConfig) -> HealthConfig:
        """Read ``train.health`` (typed and range-checked by the config schema);
        ``warmup_steps: null`` means ``train.cls_warmup_steps``."""
        node = cfg.train.health
        values = {key: node[key] for key in cls.__dataclass_fields__}
        if values["warmup_steps"] is None:
            values["warmup_steps"] = cfg.train.cls_warmup_steps
        return cls(**values)


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """``-(p log p + (1-p) log(1-p))`` element-wise, in nats, 0 at ``p`` = 0 or 1."""
    p = p.float()
    return -(torch.special.xlogy(p, p) + torch.special.xlogy(1 - p, 1 - p))


def constant_predictor_loss(tags: torch.Tensor) -> torch.Tensor:
    """The multilabel soft-margin loss of the best constant predictor on ``tags`` ``[N, C]``.

    Predicting ``logit(p_c)`` for every image (``p_c`` = the share of images tagged ``c``)
    minimises the loss among predictors that ignore the image; that loss is the mean over
    classes of the binary entropy of ``p_c``.
    """
    if tags.dim() != 2 or tags.shape[0] == 0:
        raise ValueError(f"tags must be a non-empty [N, C] matrix, got shape {tuple(tags.shape)}")
    return binary_entropy((tags > 0).float().mean(dim=0)).mean()


def loss_weights(objective: DSCLObjective) -> dict[str, float]:
    """The weight each term of ``LossOutput.terms`` enters the total with."""
    full = objective.supervision == "full"  # full supervision adds L_seg with weight 1
    return {
        "cls": 1.0,
        "seg": 1.0 if full else objective.w_seg,
        "pgcl": objective.w_pgcl,
        "sgcl": objective.w_sgcl,
        "cross": objective.w_cross,
    }


def levers(cfg: DictConfig, *names: str, term: str | None = None) -> str:
    """``"Likely levers: ..."`` naming each config key with its current value.

    ``names`` from: ``backbone``, ``lr``, ``warmup``, ``bg``, ``band``, ``weight`` (the
    weight of ``term``).
    """
    texts = {
        "backbone": f"a pretrained backbone (now model.backbone={cfg.model.backbone}, "
        f"model.pretrained={'null' if cfg.model.pretrained is None else cfg.model.pretrained}; "
        "e.g. `dscnet train --config real_cpu data.root=DIR`)",
        "lr": f"the learning rate optim.lr (now {cfg.optim.lr})",
        "warmup": f"the classifier warm-up train.cls_warmup_steps (now {cfg.train.cls_warmup_steps})",
        "bg": f"the background threshold cam.bg_threshold (now {cfg.cam.bg_threshold}; "
        "`dscnet threshold` sweeps it on a checkpoint)",
        "band": f"the uncertain band cam.low / cam.high (now {cfg.cam.low} / {cfg.cam.high})",
    }
    if term in _WEIGHTED_TERMS:
        texts["weight"] = f"the weight loss.{term}.weight (now {cfg.loss[term].weight})"
    return "Likely levers: " + "; ".join(texts[n] for n in names if n in texts) + "."


def background_warning(metrics: Mapping[str, Any], what: str, cfg: DictConfig) -> str | None:
    """:func:`background_message` at ``train.health.eval_fg_ratio``, with the levers of ``cfg``."""
    text = background_message(metrics, what, HealthConfig.from_config(cfg).eval_fg_ratio)
    return None if text is None else f"{text}. " + levers(cfg, "backbone", "lr", "warmup", "bg")


def print_warning(text: str) -> None:
    """Print a health warning on stderr with rich (above a live progress bar, unwrapped)."""
    from rich.console import Console

    Console(stderr=True, soft_wrap=True, highlight=False).print(
        f"warning: {text}", style="bold yellow", markup=False
    )


class TrainingHealth:
    """Watches one training run; see the module docstring for the conditions.

    Args:
        cfg: the run's config (thresholds from ``train.health``, levers from the rest).
        weights: the weight of each loss term (:func:`loss_weights`).
        ignore_index: the ignore label of the pseudo labels.
        pseudo: whether ``LossOutput.pseudo_labels`` are pseudo labels (False under full
            supervision, where they are the true masks).
    """

    def __init__(
        self, cfg: DictConfig, weights: Mapping[str, float], ignore_index: int = 255, pseudo: bool = True
    ) -> None:
        self.cfg = cfg
        self.config = HealthConfig.from_config(cfg)
        self.weights = dict(weights)
        self.ignore_index = int(ignore_index)
        self.pseudo = pseudo
        self.warnings: list[HealthWarning] = []  # the first sighting of each condition
        self.active: set[str] = set()  # conditions that held at the last decision
        self.seg_start: int | None = None  # first step with L_seg
        self._reset()

    @classmethod
    def for_objective(cls, cfg: DictConfig, objective: DSCLObjective) -> TrainingHealth | None:
        """The monitor of a run trained with ``objective``; None when ``train.health.enabled`` is off."""
        if not HealthConfig.from_config(cfg).enabled:
            return None
        return cls(cfg, loss_weights(objective), objective.ignore_index, objective.supervision != "full")

    def _reset(self) -> None:
        self._first: int | None = None
        self._last: int | None = None
        self._acc: torch.Tensor | None = None
        self._tag_sum: torch.Tensor | None = None
        self._images = 0
        self._seg_pixels = 0
        self._terms: dict[str, torch.Tensor] = {}
        self._term_steps: dict[str, int] = {}
        self._seg_window = False  # the window holds steps with L_seg

    # ------------------------------------------------------------------ per step (no sync)
    @torch.no_grad()
    def update(
        self,
        step: int,
        out: Mapping[str, torch.Tensor],
        tags: torch.Tensor,
        loss: LossOutput,
        valid: torch.Tensor | None = None,
    ) -> None:
        """Add one (micro-)batch of optimisation step ``step`` (0-based, as the objective sees it).

        Args:
            out: the model's output (``cls_logits`` ``[B, C]``, ``seg_logits`` ``[B, C+1, h, w]``).
            tags: ``[B, C]`` multi-hot tags.
            loss: the objective's output (``terms``, ``pseudo_labels``).
            valid: ``[B, H, W]`` bool, False on crop padding.
        """
        logits = out["cls_logits"].detach().float()
        positive = tags.detach() > 0
        if self._acc is None:
            self._acc = torch.zeros(_NUM_SLOTS, device=logits.device)
            self._tag_sum = torch.zeros(logits.shape[1], device=logits.device)
            self._first = step
        self._last = step
        predicted = logits > 0
        parts = [logits.new_zeros(())] * _NUM_SLOTS
        parts[_CLS_SUM] = loss.terms["cls"].detach().float() * logits.shape[0]
        self._images += logits.shape[0]
        parts[_TP] = (predicted & positive).sum().float()
        parts[_PRED_POS] = predicted.sum().float()
        parts[_POS] = positive.sum().float()
        labels = loss.pseudo_labels
        if self.pseudo and labels is not None:
            counted = valid.to(labels.device, torch.bool) if valid is not None else torch.ones_like(labels, dtype=torch.bool)
            parts[_PL_BG] = ((labels == 0) & counted).sum().float()
            parts[_PL_IGN] = ((labels == self.ignore_index) & counted).sum().float()
            parts[_PL_PIX] = counted.sum().float()
        if "seg" in loss.terms and "seg_logits" in out:
            if self.seg_start is None:
                self.seg_start = step
            self._seg_window = True
            seg = out["seg_logits"].detach()
            parts[_SEG_FG] = (seg.argmax(dim=1) != 0).sum().float()
            self._seg_pixels += seg[:, 0].numel()
        self._acc += torch.stack(parts)
        self._tag_sum += positive.float().sum(dim=0)
        for key, value in loss.terms.items():
            weighted = value.detach().float().abs() * float(self.weights.get(key, 1.0))
            self._terms[key] = self._terms[key] + weighted if key in self._terms else weighted
            self._term_steps[key] = self._term_steps.get(key, 0) + 1

    # ------------------------------------------------------------------ at log steps (one sync)
    def report(self, step: int, final: bool = False) -> tuple[dict[str, float], list[HealthWarning]]:
        """Decide on the window once it spans ``train.health.window`` steps (or when ``final``).

        Args:
            step: the number of optimisation steps done (the trainer's log step).
            final: the last step of the run: decide on whatever the window holds.

        Returns:
            ``({"health/...": value}, new warnings)``; both empty while the window fills.
        """
        if self._acc is None or self._first is None or self._last is None:
            return {}, []
        if not final and self._last - self._first + 1 < self.config.window:
            return {}, []
        # The one host sync of a window: every sum in one transfer.
        names = list(self._terms)
        tag_freq = (self._tag_sum / max(self._images, 1)).clamp(0, 1)
        packed = torch.cat([self._acc, binary_entropy(tag_freq).mean()[None], *(self._terms[k][None] for k in names)])
        host = packed.tolist()
        acc, constant = host[:_NUM_SLOTS], host[_NUM_SLOTS]
        terms = {k: v / self._term_steps[k] for k, v in zip(names, host[_NUM_SLOTS + 1 :])}
        images, seg_pixels = self._images, self._seg_pixels
        first, last, seg_window = self._first, self._last, self._seg_window
        self._reset()
        span = f"steps {first + 1}-{last + 1}"
        values: dict[str, float] = {}
        seen: dict[str, tuple[str, dict[str, float]]] = {}
        cfg = self.config

        if first >= cfg.warmup_steps and images > 0:
            cls_loss = acc[_CLS_SUM] / images
            f1 = 2 * acc[_TP] / max(acc[_PRED_POS] + acc[_POS], 1.0)
            values.update({"health/cls_loss": cls_loss, "health/cls_constant": constant, "health/cls_f1": f1})
            if constant > 0 and cls_loss >= cfg.cls_loss_ratio * constant:
                seen["cls_constant"] = (
                    f"the classification loss has not come down from the constant predictor's "
                    f"level: L_cls {cls_loss:.4f} over {span}, where predicting each tag's frequency "
                    f"for every image gives {constant:.4f} (ratio {cls_loss / constant:.2f} >= "
                    f"train.health.cls_loss_ratio {cfg.cls_loss_ratio:g}): the classifier has not "
                    f"learned the tags by step {last + 1}. "
                    + levers(self.cfg, "backbone", "lr", "warmup"),
                    {"cls_loss": cls_loss, "constant": constant},
                )
            if f1 < cfg.min_f1:
                seen["cls_f1"] = (
                    f"the classifier's image-level F1 on the training batches is {f1:.3f} over "
                    f"{span} (< train.health.min_f1 {cfg.min_f1:g}; a tag counts as predicted where "
                    f"its logit is > 0): {int(acc[_TP])} of {int(acc[_POS])} tags found, "
                    f"{int(acc[_PRED_POS])} predicted. " + levers(self.cfg, "backbone", "lr", "warmup"),
                    {"f1": f1, "true_positives": acc[_TP], "predicted": acc[_PRED_POS], "tags": acc[_POS]},
                )

        if acc[_PL_PIX] > 0:
            bg, ign = acc[_PL_BG] / acc[_PL_PIX], acc[_PL_IGN] / acc[_PL_PIX]
            fg = max(0.0, 1.0 - bg - ign)
            values.update({"health/pseudo_fg_share": fg, "health/pseudo_ignore_share": ign})
            shares = f"{100 * bg:.1f}% background, {100 * ign:.1f}% ignore, {100 * fg:.2f}% foreground"
            if ign >= cfg.max_ignore_share:
                seen["pseudo_ignore"] = (
                    f"the pseudo labels are (nearly) all ignore over {span}: {shares} of the image "
                    f"pixels (ignore >= train.health.max_ignore_share {cfg.max_ignore_share:g}), so "
                    "L_seg and the pixel contrast learn from almost nothing. "
                    + levers(self.cfg, "band", "bg", "backbone"),
                    {"background": bg, "ignore": ign, "foreground": fg},
                )
            elif fg < cfg.min_fg_share:
                seen["pseudo_background"] = (
                    f"the pseudo labels hold (nearly) no foreground over {span}: {shares} of the "
                    f"image pixels (foreground < train.health.min_fg_share {cfg.min_fg_share:g}), so "
                    "the segmentation head learns to predict background everywhere. "
                    + levers(self.cfg, "bg", "band", "backbone", "warmup"),
                    {"background": bg, "ignore": ign, "foreground": fg},
                )

        if seg_window and seg_pixels > 0 and self.seg_start is not None:
            seg_fg = acc[_SEG_FG] / seg_pixels
            values["health/seg_fg_share"] = seg_fg
            if first >= self.seg_start + cfg.window and seg_fg < cfg.min_fg_share:
                seen["seg_background"] = (
                    f"the segmentation head predicts (nearly) only background on the training "
                    f"batches: {100 * seg_fg:.2f}% foreground over {span} (< train.health."
                    f"min_fg_share {cfg.min_fg_share:g}), {first - self.seg_start} steps after "
                    "L_seg switched on. " + levers(self.cfg, "bg", "backbone", "lr", "warmup"),
                    {"seg_fg_share": seg_fg},
                )

        if len(terms) >= 2:
            top = max(terms, key=terms.__getitem__)
            others = sum(v for k, v in terms.items() if k != top)
            if others > 0:
                ratio = terms[top] / others
                values["health/max_term_ratio"] = ratio
                if ratio > cfg.dominance_ratio:
                    rest = ", ".join(f"{k} {v:.4g}" for k, v in terms.items() if k != top)
                    names = ("weight", "lr") if top in _WEIGHTED_TERMS else ("lr", "backbone")
                    seen["loss_dominance"] = (
                        f"the loss term '{top}' dominates the total by {math.log10(ratio):.1f} orders "
                        f"of magnitude over {span}: weighted {terms[top]:.4g} against {others:.4g} "
                        f"for all the others ({rest}; > train.health.dominance_ratio "
                        f"{cfg.dominance_ratio:g}), so the other terms hardly steer training. "
                        + levers(self.cfg, *names, term=top),
                        {"term": terms[top], "others": others, "ratio": ratio},
                    )
        return values, self._record(step, seen)

    def check_eval(self, step: int, what: str, split: str, metrics: Mapping[str, Any]) -> list[HealthWarning]:
        """Warn (once per mode) when an evaluation of ``what`` on ``split`` is all background."""
        text = background_warning(metrics, f"the {what} prediction on '{split}' at step {step}", self.cfg)
        condition = f"eval_{what}_background"
        if text is None:
            self.active.discard(condition)
            return []
        shares = foreground_shares(metrics) or (math.nan, math.nan)
        return self._record(step, {condition: (text, {"pred_fg": shares[0], "true_fg": shares[1]})}, keep=True)

    def _record(
        self, step: int, seen: Mapping[str, tuple[str, dict[str, float]]], keep: bool = False
    ) -> list[HealthWarning]:
        """Remember what held at this decision; return the conditions seen for the first time."""
        if not keep:
            # Eval conditions are decided by check_eval, not by the training windows.
            self.active = {c for c in self.active if c.startswith("eval_")}
        self.active |= set(seen)
        known = {w.condition for w in self.warnings}
        new = [HealthWarning(c, step, text, vals) for c, (text, vals) in seen.items() if c not in known]
        self.warnings.extend(new)
        return new

    def summary(self) -> list[str]:
        """One line per condition seen during the run, for the end-of-training summary."""
        return [
            f"[{w.condition}, first at step {w.step}"
            + ("" if w.condition in self.active else ", no longer at the last check")
            + f"] {w.message}"
            for w in self.warnings
        ]
