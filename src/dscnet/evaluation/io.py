"""Writing evaluation results: ``metrics.json``, a readable ``metrics.txt`` table and
``confusion.png``.

``metrics.json`` layout (NaN, i.e. undefined, is written as ``null``)::

    {"title": str, "num_classes": K, "class_names": [K names, background first],
     "miou", "pixel_accuracy", "mean_accuracy", "fw_iou": float | null,
     "iou", "precision", "recall": [K floats | null], "gt_pixels", "pred_pixels": [K ints],
     "num_pixels": int, "per_class": {name: {"iou", "precision", "recall", "pixels"}},
     "confusion": [[K ints] * K], "extra": {...}}

``extra`` carries what the numbers mean (split, scales, flip, CRF, checkpoint) so that every
reported number states its protocol.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dscnet.utils.io import atomic_write, atomic_write_text


def to_jsonable(value: Any) -> Any:
    """Recursively turn numpy/torch scalars and arrays into JSON types; NaN/inf -> ``None``."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return to_jsonable(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def _as_confusion(confusion: Any, k: int) -> np.ndarray:
    if isinstance(confusion, torch.Tensor):
        confusion = confusion.detach().cpu().numpy()
    m = np.asarray(confusion, dtype=np.int64)
    if m.shape != (k, k):
        raise ValueError(f"confusion matrix shape {m.shape} does not match {k} class names")
    return m


def _pct(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100.0 * float(value):.2f}"


def format_table(metrics: dict[str, Any], class_names: list[str], title: str = "") -> str:
    """A plain-text table (class, IoU, precision, recall, pixels; all in %) for terminals/logs.

    ``-`` marks an undefined value (class absent from ground truth and/or prediction).
    """
    iou = metrics.get("iou", [])
    if len(iou) != len(class_names):
        raise ValueError(f"{len(iou)} per-class IoU values for {len(class_names)} class names")
    precision = metrics.get("precision", [None] * len(iou))
    recall = metrics.get("recall", [None] * len(iou))
    gt_pixels = metrics.get("gt_pixels", [None] * len(iou))
    pred_pixels = metrics.get("pred_pixels", [None] * len(iou))
    header = ("class", "IoU", "precision", "recall", "GT pixels", "pred pixels")
    rows = [
        (
            str(name),
            _pct(iou[i]),
            _pct(precision[i]),
            _pct(recall[i]),
            "-" if gt_pixels[i] is None else str(gt_pixels[i]),
            "-" if pred_pixels[i] is None else str(pred_pixels[i]),
        )
        for i, name in enumerate(class_names)
    ]
    widths = [max(len(header[j]), *(len(r[j]) for r in rows)) for j in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        # Class names left-aligned, numbers right-aligned so digits line up.
        parts = [cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return "  ".join(parts).rstrip()

    out = []
    if title:
        out.append(title)
    out.append(
        f"mIoU {_pct(metrics.get('miou'))} | pixel acc {_pct(metrics.get('pixel_accuracy'))} | "
        f"mean acc {_pct(metrics.get('mean_accuracy'))} | fwIoU {_pct(metrics.get('fw_iou'))}"
    )
    out.append(line(header))
    out.append("  ".join("-" * w for w in widths))
    out.extend(line(r) for r in rows)
    return "\n".join(out) + "\n"


def plot_confusion(
    confusion: Any, class_names: list[str], path: str | Path, title: str = ""
) -> Path:
    """Save a row-normalised confusion matrix (rows = truth) as a PNG, atomically.

    Figure and font sizes scale with the number of classes so both VOC (21) and COCO (81)
    stay readable; cell values are printed only when there are few classes.
    """
    # The object-oriented API with an Agg canvas: no pyplot global state, no GUI backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    k = len(class_names)
    m = _as_confusion(confusion, k).astype(np.float64)
    rows = m.sum(axis=1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)

    side = max(5.0, 0.2 * k + 2.5)
    # Roughly 80% of the figure side holds the k cells; a label fits in ~60% of a cell.
    cell_pt = side * 72.0 * 0.8 / max(k, 1)
    label_size = float(np.clip(0.6 * cell_pt, 4.0, 9.0))
    fig = Figure(figsize=(side + 1.2, side), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks(np.arange(k), labels=class_names, rotation=90, fontsize=label_size)
    ax.set_yticks(np.arange(k), labels=class_names, fontsize=label_size)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title(title or "confusion matrix (row-normalised)", fontsize=10)
    if k <= 25:
        text_size = float(np.clip(0.4 * cell_pt, 5.0, 8.0))
        for i, j in zip(*np.nonzero(norm >= 0.005)):
            ax.text(
                j,
                i,
                f"{100 * norm[i, j]:.0f}",
                ha="center",
                va="center",
                fontsize=text_size,
                color="white" if norm[i, j] > 0.5 else "black",
            )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def write_metrics(
    out_dir: str | Path,
    metrics: dict[str, Any],
    class_names: list[str],
    confusion: Any,
    title: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``metrics.json``, ``metrics.txt`` and ``confusion.png`` into ``out_dir``.

    Args:
        metrics: the dict of :func:`dscnet.evaluation.compute_metrics`.
        class_names: K names, background first.
        confusion: the ``[K, K]`` counts (numpy array or tensor).
        title: a one-line description, e.g. ``"voc val, scales 1.0, no CRF"``.
        extra: protocol and provenance (split, scales, flip, crf, checkpoint, ...).

    Returns:
        ``{"json": path, "txt": path, "png": path}``.
    """
    out_dir = Path(out_dir)
    k = len(class_names)
    m = _as_confusion(confusion, k)
    iou = metrics.get("iou", [])
    if len(iou) != k:
        raise ValueError(f"metrics have {len(iou)} per-class values for {k} class names")
    per_class = {
        str(name): {
            "iou": metrics["iou"][i],
            "precision": metrics.get("precision", [None] * k)[i],
            "recall": metrics.get("recall", [None] * k)[i],
            "pixels": metrics.get("gt_pixels", [None] * k)[i],
        }
        for i, name in enumerate(class_names)
    }
    doc = {
        "title": title,
        "num_classes": k,
        "class_names": list(class_names),
        **metrics,
        "per_class": per_class,
        "confusion": m.tolist(),
        "extra": dict(extra or {}),
    }
    json_path = atomic_write_text(
        out_dir / "metrics.json", json.dumps(to_jsonable(doc), indent=2, allow_nan=False) + "\n"
    )
    txt_path = atomic_write_text(out_dir / "metrics.txt", format_table(metrics, class_names, title))
    png_path = plot_confusion(m, class_names, out_dir / "confusion.png", title=title)
    return {"json": json_path, "txt": txt_path, "png": png_path}


def read_metrics(path: str | Path) -> dict[str, Any]:
    """Load a ``metrics.json``; ``null`` per-class values come back as NaN floats."""
    doc = json.loads(Path(path).read_text())
    for key in ("miou", "pixel_accuracy", "mean_accuracy", "fw_iou"):
        if key in doc and doc[key] is None:
            doc[key] = math.nan
    for key in ("iou", "precision", "recall"):
        if key in doc:
            doc[key] = [math.nan if v is None else float(v) for v in doc[key]]
    return doc
