"""Helpers shared by demo and ablate: jobs and step times."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from dscnet.engine.experiment import Job, step_seconds_from_scalars, train_job
from dscnet.engine.trainer import Trainer
from dscnet.errors import ConfigError
from tests.conftest import tiny_config


def test_step_seconds_from_logged_speed_uses_windows_after_the_warmup(tmp_path: Path):
    # tiny config: 2 groups x 2 images = 4 images per step; warm-up ends at step 2
    cfg = tiny_config(tmp_path)
    rows = [
        {"step": 2, "speed/images_per_s": 1.0},  # warm-up window: 4 s per step, left out
        {"step": 4, "speed/images_per_s": 8.0},  # 0.5 s
        {"step": 6, "speed/images_per_s": 4.0},  # 1.0 s
        {"step": 6, "val/seg_miou": 0.5},
        {"step": 8, "speed/images_per_s": 2.0},  # 2.0 s
    ]
    (tmp_path / "scalars.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert step_seconds_from_scalars(tmp_path, cfg) == 1.0
    assert math.isnan(step_seconds_from_scalars(tmp_path / "missing", cfg))


def test_jobs_are_plain_tuples_with_an_optional_resume():
    job = Job({"a": 1}, "B", 0, ("seg",))
    assert job.resume is None and tuple(job)[:4] == ({"a": 1}, "B", 0, ("seg",))
    assert Job(*({"a": 1}, "B", 0, ("seg",), "auto")).resume == "auto"


def test_a_cam_split_without_masks_is_a_clear_error(tmp_path: Path, monkeypatch):
    # Stand in for a cam split without ground truth: run_eval leaves such modes out.
    real = Trainer.run_eval

    def without_cam(self, tag, what=("seg",), **kwargs):
        return real(self, tag, what=tuple(m for m in what if m == "seg"), **kwargs)

    monkeypatch.setattr(Trainer, "run_eval", without_cam)
    cfg = OmegaConf.to_container(tiny_config(tmp_path, "train.max_steps=1"), resolve=True)
    with pytest.raises(ConfigError, match=r"split 'train' \(eval.cam_split\) has no masks, so cam/pseudo"):
        train_job(Job(cfg, "B", 0, ("seg", "cam", "pseudo")))
