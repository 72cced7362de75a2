"""What training-health checks leave behind, readable without the training engine.

:class:`HealthWarning` records (``{"step": N, "warnings": [...]}`` lines in ``scalars.jsonl``,
written by :class:`dscnet.engine.health.TrainingHealth`) and the all-background test of an
evaluation's metrics, which ``dscnet eval``, the end-of-training summary and the HTML report
share. It sits on the evaluation floor so that the report (``dscnet.visualize``) can read it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Default of train.health.eval_fg_ratio: an evaluation whose predicted foreground share is
# below this fraction of the ground truth's counts as (nearly) all background.
EVAL_FG_RATIO = 0.1


@dataclass(frozen=True)
class HealthWarning:
    """One condition seen at ``step``: what was seen (``message``, ``values``) and where."""

    condition: str
    step: int
    message: str
    values: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def foreground_shares(metrics: Mapping[str, Any]) -> tuple[float, float] | None:
    """``(predicted, true)`` foreground share of the counted pixels of an evaluation's
    metrics (``pred_pixels`` / ``gt_pixels`` of :func:`compute_metrics`; class 0 is
    background); None when the counts are missing or empty."""
    pred, gt = metrics.get("pred_pixels"), metrics.get("gt_pixels")
    if not isinstance(pred, Sequence) or not isinstance(gt, Sequence) or not pred or not gt:
        return None
    pred_total, gt_total = float(sum(pred)), float(sum(gt))
    if pred_total <= 0 or gt_total <= 0:
        return None
    return 1.0 - pred[0] / pred_total, 1.0 - gt[0] / gt_total


def background_message(
    metrics: Mapping[str, Any], what: str = "segmentation", fg_ratio: float = EVAL_FG_RATIO
) -> str | None:
    """A sentence when an evaluation predicts (nearly) only background, else None.

    "Nearly" means a predicted foreground share below ``fg_ratio`` x the ground truth's.
    """
    shares = foreground_shares(metrics)
    if shares is None:
        return None
    pred_fg, true_fg = shares
    if true_fg <= 0 or pred_fg >= fg_ratio * true_fg:
        return None
    miou = metrics.get("miou")
    score = f" (mIoU {100 * miou:.2f})" if isinstance(miou, (int, float)) and math.isfinite(miou) else ""
    return (
        f"{what} is (nearly) all background: {100 * pred_fg:.2f}% of the pixels predicted "
        f"foreground where the ground truth has {100 * true_fg:.2f}%{score}"
    )


def append_warnings(path: Path, step: int, warnings: Sequence[HealthWarning]) -> None:
    """Append one ``{"step": N, "warnings": [...]}`` line to ``scalars.jsonl``."""
    if warnings:
        with path.open("a") as fh:
            fh.write(json.dumps({"step": step, "warnings": [w.to_json() for w in warnings]}) + "\n")


def read_warnings(path: Path) -> list[HealthWarning]:
    """The health warnings recorded in a ``scalars.jsonl`` (a missing or unreadable file
    gives none; unreadable lines are skipped)."""
    found: list[HealthWarning] = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return found
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        items = rec.get("warnings") if isinstance(rec, dict) else None
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict) and isinstance(item.get("message"), str):
                step = item.get("step", rec.get("step", 0))
                found.append(
                    HealthWarning(
                        str(item.get("condition", "")),
                        int(step) if isinstance(step, (int, float)) else 0,
                        item["message"],
                    )
                )
    return found
