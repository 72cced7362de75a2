"""Checkpoints you can trust: atomic writes, everything needed to resume exactly.

A checkpoint is a dict saved with ``torch.save`` holding only tensors and plain Python
containers, so it loads with ``torch.load(weights_only=True)``: no pickled code runs. Reading
one (and rebuilding its model) is :mod:`dscnet.models.loading`, a floor lower, so that
inference can load models without the training engine.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

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
