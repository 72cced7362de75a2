"""Inference: multi-scale + flip, dense CRF, predict on images, pseudo-label export, export.

Names are resolved lazily (PEP 562) so that ``import dscnet.inference.crf`` in a CRF worker
process does not pay for torch, and optional extras are imported only when used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "segment_probs": "multiscale",
    "CrfParams": "crf",
    "CrfPool": "crf",
    "dense_crf": "crf",
    "crf_map": "crf",
    "require_crf": "crf",
    "PredictSummary": "predict",
    "expand_inputs": "predict_inputs",
    "predict_paths": "predict",
    "predict_from_checkpoint": "predict",
    "export_pseudo_labels": "pseudo_export",
    "SegmentWrapper": "export",
    "export_onnx": "export",
    "export_torchscript": "export",
    "verify_onnx": "export",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dscnet.inference' has no attribute {name!r}")
    return getattr(importlib.import_module(f"dscnet.inference.{module}"), name)


def __dir__() -> list[str]:
    return __all__
