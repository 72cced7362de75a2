"""Scoring a split's predictions: one confusion matrix, plus pseudo labels' uncertain pixels."""

from __future__ import annotations

from typing import Any

import torch

from dscnet.evaluation.confusion import ConfusionMatrix
from dscnet.utils.distributed import all_reduce_sum


class LabelScore:
    """Confusion matrix of one evaluation, summed across ranks by :meth:`compute`.

    With ``uncertain=True`` (pseudo labels) predictions may hold ``ignore_index``: those
    pixels count as background in ``miou``, are left out of ``confident_miou``, and
    ``coverage`` is the share of labelled pixels that are not uncertain.
    """

    def __init__(self, num_classes: int, ignore_index: int, device: torch.device, uncertain: bool = False) -> None:
        self.ignore_index = ignore_index
        self.uncertain = uncertain
        self.confusion = ConfusionMatrix(num_classes, ignore_index=ignore_index, device=device)
        self.confident = ConfusionMatrix(num_classes, ignore_index=ignore_index, device=device)
        self.counts = torch.zeros(2, dtype=torch.float64, device=device)  # covered, labelled

    def update(self, pred: torch.Tensor, masks: torch.Tensor) -> None:
        if not self.uncertain:
            self.confusion.update(pred, masks)
            return
        uncertain = pred == self.ignore_index
        pred = pred.masked_fill(uncertain, 0)
        self.confusion.update(pred, masks)
        self.confident.update(pred, masks.masked_fill(uncertain, self.ignore_index))
        valid = masks != self.ignore_index
        self.counts[0] += (valid & ~uncertain).sum()
        self.counts[1] += valid.sum()

    def compute(self) -> dict[str, Any]:
        """``ConfusionMatrix.compute()`` over all ranks, plus ``confident_miou`` and
        ``coverage`` for pseudo labels."""
        self.confusion.all_reduce()
        metrics = self.confusion.compute()
        if self.uncertain:
            self.confident.all_reduce()
            self.counts = all_reduce_sum(self.counts)
            metrics["confident_miou"] = self.confident.compute()["miou"]
            metrics["coverage"] = float(self.counts[0] / self.counts[1].clamp(min=1))
        return metrics
