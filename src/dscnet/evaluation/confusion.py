"""Streaming confusion matrix and the segmentation metrics derived from it.

The matrix is accumulated on the fly over a whole split (nothing is written per image), so
evaluation memory does not grow with the dataset. Rows are ground truth, columns are
predictions; the background class (0) is a class like any other, and pixels labelled
``ignore_index`` (255 in VOC) are skipped.

mIoU follows the field (VOC / COCO-stuff protocol): the mean of the per-class IoU over all
classes. A class that appears neither in the ground truth nor in the predictions of the split
has an undefined IoU (0/0); it is reported as NaN and left out of the mean (``nanmean``). A
class that is only predicted (false positives, no ground truth) has IoU 0 and counts.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from dscnet.utils.distributed import is_dist

ArrayLike = torch.Tensor | np.ndarray


def _as_tensor(x: ArrayLike, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        # A float prediction is almost always logits/probabilities passed by mistake.
        raise TypeError(
            f"{name} must hold integer class ids, got dtype {x.dtype} "
            "(pass logits.argmax(dim=1) rather than logits)"
        )
    return x


def _format_values(values: torch.Tensor, limit: int = 10) -> str:
    uniq = torch.unique(values).tolist()
    shown = ", ".join(str(v) for v in uniq[:limit])
    return shown + (f", ... ({len(uniq)} distinct)" if len(uniq) > limit else "")


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Element-wise ``num / den`` with NaN where ``den == 0`` (undefined, not zero)."""
    out = np.full(np.broadcast(num, den).shape, np.nan, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def compute_metrics(confusion: ArrayLike) -> dict[str, Any]:
    """Segmentation metrics from a ``[K, K]`` confusion matrix (rows = truth, cols = prediction).

    Returns a dict of Python floats/lists (NaN marks an undefined value):

    - ``miou``: mean IoU over classes present in the ground truth or the prediction;
    - ``iou``, ``precision``, ``recall``: per class, length K (precision is NaN for a class
      never predicted, recall NaN for a class absent from the ground truth);
    - ``pixel_accuracy``: correctly labelled pixels / all counted pixels;
    - ``mean_accuracy``: mean of the per-class recall (classes with ground truth);
    - ``fw_iou``: IoU weighted by each class's share of ground-truth pixels;
    - ``gt_pixels``, ``pred_pixels``: per-class pixel counts (ints), ``num_pixels``: total.
    """
    if isinstance(confusion, torch.Tensor):
        confusion = confusion.detach().cpu().numpy()
    m = np.asarray(confusion, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"confusion matrix must be square [K, K], got shape {m.shape}")
    tp = np.diag(m)
    gt = m.sum(axis=1)
    pred = m.sum(axis=0)
    total = m.sum()
    iou = _safe_div(tp, gt + pred - tp)
    precision = _safe_div(tp, pred)
    recall = _safe_div(tp, gt)
    freq = gt / total if total > 0 else np.zeros_like(gt)
    present = gt > 0
    fw_iou = float((freq[present] * iou[present]).sum()) if total > 0 else math.nan
    return {
        "miou": _nanmean(iou),
        "iou": iou.tolist(),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "pixel_accuracy": float(tp.sum() / total) if total > 0 else math.nan,
        "mean_accuracy": _nanmean(recall),
        "fw_iou": fw_iou,
        "gt_pixels": [int(v) for v in gt],
        "pred_pixels": [int(v) for v in pred],
        "num_pixels": int(total),
    }


class ConfusionMatrix:
    """Accumulates a ``[K, K]`` int64 confusion matrix over batches (and over DDP ranks).

    Args:
        num_classes: K, the number of classes *including* background.
        ignore_index: target value to skip (VOC boundary / unknown pixels).
        device: where the matrix lives; ``None`` = the device of the first ``update`` input
            (so GPU evaluation never copies masks to the host).
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        device: torch.device | str | None = None,
    ) -> None:
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self._matrix: torch.Tensor | None = None
        if device is not None:
            self._matrix = self._zeros(torch.device(device))

    def _zeros(self, device: torch.device) -> torch.Tensor:
        return torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64, device=device)

    @property
    def matrix(self) -> torch.Tensor:
        """The int64 ``[K, K]`` counts; rows = ground truth, columns = prediction."""
        if self._matrix is None:
            self._matrix = self._zeros(torch.device("cpu"))
        return self._matrix

    def numpy(self) -> np.ndarray:
        """The matrix as an int64 numpy array (host copy)."""
        return self.matrix.detach().cpu().numpy().astype(np.int64)

    @torch.no_grad()
    def update(self, pred: ArrayLike, target: ArrayLike) -> None:
        """Add a batch. ``pred`` and ``target`` are integer class maps of the same shape.

        Raises:
            ValueError: shapes differ, a target value is neither a class nor ``ignore_index``,
                or a prediction is outside ``[0, K)``.
        """
        pred = _as_tensor(pred, "pred")
        target = _as_tensor(target, "target")
        if pred.shape != target.shape:
            raise ValueError(
                f"pred shape {tuple(pred.shape)} does not match target shape "
                f"{tuple(target.shape)} (predictions must be class ids at the mask's size)"
            )
        device = self._matrix.device if self._matrix is not None else target.device
        if self._matrix is None:
            self._matrix = self._zeros(device)
        pred = pred.to(device=device, dtype=torch.int64).reshape(-1)
        target = target.to(device=device, dtype=torch.int64).reshape(-1)
        k = self.num_classes

        valid = target != self.ignore_index
        bad_target = valid & ((target < 0) | (target >= k))
        if bool(bad_target.any()):
            raise ValueError(
                f"target contains label ids outside the {k} classes (0..{k - 1}) and not equal "
                f"to ignore_index={self.ignore_index}: {_format_values(target[bad_target])}"
            )
        # Predictions are checked everywhere, ignored pixels included: an out-of-range
        # prediction is a bug in the caller whichever pixel it lands on.
        bad_pred = (pred < 0) | (pred >= k)
        if bool(bad_pred.any()):
            raise ValueError(
                f"pred contains class ids outside 0..{k - 1}: {_format_values(pred[bad_pred])}"
            )
        index = target[valid] * k + pred[valid]
        self._matrix += torch.bincount(index, minlength=k * k).reshape(k, k)

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another matrix's counts into this one (e.g. from another worker); returns self."""
        if not isinstance(other, ConfusionMatrix):
            raise TypeError(f"can only merge a ConfusionMatrix, got {type(other).__name__}")
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise ValueError(
                f"cannot merge a matrix with {other.num_classes} classes / ignore "
                f"{other.ignore_index} into one with {self.num_classes} / {self.ignore_index}"
            )
        self.matrix.add_(other.matrix.to(self.matrix.device))
        return self

    def all_reduce(self) -> ConfusionMatrix:
        """Sum the matrix over all ranks of the default process group (no-op without one)."""
        if not is_dist():
            return self
        m = self.matrix
        if dist.get_backend() == dist.Backend.NCCL and m.device.type != "cuda":
            # NCCL only reduces CUDA tensors; round-trip through the rank's current GPU.
            reduced = m.to(torch.device("cuda", torch.cuda.current_device()))
            dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
            m.copy_(reduced.to(m.device))
        else:
            dist.all_reduce(m, op=dist.ReduceOp.SUM)
        return self

    def reset(self) -> None:
        """Zero the counts (keeps the device)."""
        if self._matrix is not None:
            self._matrix.zero_()

    def compute(self) -> dict[str, Any]:
        """The metrics of :func:`compute_metrics` for the counts so far."""
        return compute_metrics(self.matrix)

    def __repr__(self) -> str:
        total = int(self.matrix.sum())
        return (
            f"ConfusionMatrix(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"pixels={total})"
        )
