"""Seeding and deterministic mode."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch, and choose between reproducible and fast kernels.

    ``deterministic=True``: deterministic algorithms (``torch.use_deterministic_algorithms``,
    warn-only), cuDNN deterministic and not benchmarking, and (torch's default in that
    mode) uninitialised memory filled with NaN. Same seed, same machine -> the same run.
    ``deterministic=False``: the fastest kernels, ``cudnn.benchmark`` on (cuDNN times its
    algorithms for each new input shape and keeps the fastest): on a GPU, runs with one
    seed then differ in the last bits and drift apart over training. The switch is set in
    both directions, so one process can run either kind (docs/GPU.md "Deterministic mode").
    """
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        # Needed by cuBLAS for deterministic matmuls; harmless on CPU.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic


def worker_init_fn(worker_id: int) -> None:
    """DataLoader worker seeding derived from torch's per-worker seed."""
    seed = torch.initial_seed() % (2**32)
    np.random.seed((seed + worker_id) % (2**32))
    random.seed(seed + worker_id)
