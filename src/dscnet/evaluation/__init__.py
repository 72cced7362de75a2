"""Evaluation: streaming confusion matrix, mIoU and friends, metrics files and plots."""

from dscnet.evaluation.confusion import ConfusionMatrix, compute_metrics
from dscnet.evaluation.io import (
    format_table,
    plot_confusion,
    read_metrics,
    to_jsonable,
    write_metrics,
)

__all__ = [
    "ConfusionMatrix",
    "compute_metrics",
    "format_table",
    "plot_confusion",
    "read_metrics",
    "to_jsonable",
    "write_metrics",
]
