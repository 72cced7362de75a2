"""Resolve the configured device string."""

from __future__ import annotations

import torch

from dscnet.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks the first accelerator when present, else the CPU."""
    if name in (None, "", "auto"):
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device '{name}': {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' requested but CUDA is not available on this machine")
    return device
