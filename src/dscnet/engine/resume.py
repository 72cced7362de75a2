"""Whether a checkpoint can be resumed with the current config, said before loading it.

``load_state_dict`` on a model whose config changed (``model.seg_hidden=32`` after a run with
64) dies with a wall of tensor shapes. :func:`check_resumable` compares the checkpoint's
parameter shapes with the current model's and, when they differ, raises a ConfigError that
names the config keys responsible (those marked ``shape=True`` in
:mod:`dscnet.config_schema`) and the class lists when they differ.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from dscnet.config import shape_changes
from dscnet.errors import ConfigError


def _mismatches(saved: Mapping[str, Any], current: Mapping[str, torch.Tensor], part: str) -> list[str]:
    """Parameter names of ``part`` that are missing, unexpected or of another shape."""
    out = []
    for name in sorted(set(saved) | set(current)):
        a, b = saved.get(name), current.get(name)
        if a is None or b is None:
            out.append(f"{part}.{name} {'only in the checkpoint' if b is None else 'not in the checkpoint'}")
        elif tuple(a.shape) != tuple(b.shape):
            out.append(f"{part}.{name} {tuple(a.shape)} -> {tuple(b.shape)}")
    return out


def check_resumable(
    path: str | Path,
    ckpt: Mapping[str, Any],
    cfg: DictConfig,
    class_names: Sequence[str],
    states: Mapping[str, Mapping[str, torch.Tensor]],
) -> None:
    """Raise ConfigError unless ``ckpt`` fits the model and objective built from ``cfg``.

    Args:
        path: the checkpoint (for the message).
        ckpt: the loaded checkpoint (``config``, ``class_names`` and one state dict per part).
        cfg: the current config.
        class_names: the current dataset's classes.
        states: the current state dicts by checkpoint key (``{"model": ..., "objective": ...}``).
    """
    mismatched = [m for part, state in states.items() for m in _mismatches(ckpt.get(part, {}), state, part)]
    if not mismatched:
        return
    reasons = shape_changes(ckpt.get("config", {}), cfg)
    saved_classes = list(ckpt.get("class_names") or [])
    if saved_classes and saved_classes != list(class_names):
        reasons.append(f"classes: {len(saved_classes) - 1} -> {len(class_names) - 1} ({saved_classes[1:4]}... -> {list(class_names)[1:4]}...)")
    because = "; ".join(reasons) if reasons else "parameters " + ", ".join(mismatched[:3])
    raise ConfigError(
        f"{path}: cannot resume: the config builds a model of another shape than the "
        f"checkpoint's ({because}). Resume with the checkpoint's values, or train into another "
        "experiment.work_dir"
    )
