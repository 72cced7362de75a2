"""Evaluation: streaming confusion matrix, mIoU and friends, metrics files and plots."""

from dscnet.evaluation.confusion import ConfusionMatrix, compute_metrics
from dscnet.evaluation.io import (
    format_table,
    plot_confusion,
    read_metrics,
    to_jsonable,
    write_metrics,
)
from dscnet.evaluation.score import LabelScore

__all__ = [
    "ConfusionMatrix",
    "LabelScore",
    "compute_metrics",
    "format_table",
    "plot_confusion",
    "read_metrics",
    "to_jsonable",
    "write_metrics",
]
