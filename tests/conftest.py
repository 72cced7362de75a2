"""Shared fixtures: a tiny synthetic config that trains in seconds on a CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dscnet.config import load_config

TINY_OVERRIDES = [
    "data.synth.num_train=48",
    "data.synth.num_val=12",
    "data.synth.image_size=48",
    "data.train_aug.crop_size=48",
    "data.sampler.groups_per_batch=2",
    "data.sampler.group_size=2",
    "model.seg_hidden=16",
    "model.proj_dim=16",
    "cam.par.num_iter=2",
    "cam.par.dilations=[1,2]",
    "train.max_steps=6",
    "train.cls_warmup_steps=2",
    "loss.contrast_start_step=2",
    "train.log_every=2",
    "train.eval_every=100",
    "train.ckpt_every=2",
    "train.progress=false",
    "eval.batch_size=12",
]


def tiny_config(work_dir: Path, *overrides: str):
    """The demo config shrunk to 48 px images and a few steps."""
    return load_config("synth_cpu", [*TINY_OVERRIDES, f"experiment.work_dir={work_dir}", *overrides])


@pytest.fixture(autouse=True)
def _few_threads():
    # One intra-op thread: CI has 2 cores, and the DDP tests run two processes at once;
    # more threads only add contention (and thread count never changes results here).
    torch.set_num_threads(1)
    yield
