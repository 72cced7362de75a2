"""Reading dscnet checkpoints safely and rebuilding the model they hold.

``torch.load(weights_only=True)`` only: a checkpoint is tensors and plain containers, and
nothing in a file is ever unpickled as code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from dscnet.config import typed
from dscnet.errors import CheckpointError
from dscnet.models.dscnet import build_model


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``) with a clear error for bad files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/corrupt files
        # Not torch's weights_only advice (re-run with weights_only=False): the wrong fix for
        # a corrupt file and unsafe for an untrusted one.
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        reason = type(exc).__name__ if "weights_only" in first else f"{type(exc).__name__}: {first}"
        raise CheckpointError(
            f"{path}: cannot read checkpoint ({reason}); the file is "
            "truncated, corrupt or not a dscnet checkpoint (dscnet loads weights only and never "
            "unpickles code)"
        ) from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"{path}: not a dscnet checkpoint (no 'model'/'config' entries)")
    return ckpt


def load_model_from_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, DictConfig, list[str]]:
    """Rebuild the model a checkpoint was trained with and load its weights (eval mode).

    Pretrained-weight loading is switched off: the checkpoint already holds every weight.
    """
    ckpt = load_checkpoint(path)
    # Typed and validated; a checkpoint written before a config key existed still loads, with
    # that key at its default.
    cfg = typed(ckpt["config"], f"{path} (its config)")
    cfg.model.pretrained = None
    class_names = list(ckpt.get("class_names") or [])
    if not class_names:
        raise CheckpointError(f"{path}: checkpoint has no class names")
    model = build_model(cfg, num_classes=len(class_names) - 1)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match the model in its config: {exc}") from None
    model.to(device).eval()
    return model, cfg, class_names
