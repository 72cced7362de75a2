"""Checkpoints you can trust: atomic writes, everything needed to resume exactly.

A checkpoint is a dict saved with ``torch.save`` holding only tensors and plain Python
containers, so it loads with ``torch.load(weights_only=True)``: no pickled code runs.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from dscnet.errors import CheckpointError
from dscnet.utils.io import atomic_torch_save

FORMAT_VERSION = 1


def rng_state() -> dict[str, Any]:
    """RNG states of Python, NumPy and torch (CPU and CUDA), as tensors and plain lists."""
    py_state = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, **parts: Any) -> Path:
    """Atomically write a checkpoint (temp file + rename) holding ``parts``.

    ``config`` may be a DictConfig; it is stored as a plain resolved dict.
    """
    payload = {"format_version": FORMAT_VERSION}
    for key, value in parts.items():
        if isinstance(value, DictConfig):
            value = OmegaConf.to_container(value, resolve=True)
        payload[key] = value
    return atomic_torch_save(payload, path)


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
    from dscnet.models.dscnet import build_model  # local import: models import heavy deps

    ckpt = load_checkpoint(path)
    cfg = OmegaConf.create(ckpt["config"])
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
