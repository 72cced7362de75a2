"""benchmarks/real_photos.py runs end to end on a tiny VOC-layout folder (so it cannot rot):
every phase (B, DSCNet, export + second stage, full supervision, MS+flip+CRF) and the table."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "real_photos.py"
CLASSES = ["background", "disc", "bar"]


def _voc(root: Path) -> None:
    rng = np.random.default_rng(0)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    ids = []
    for n in range(8):
        h, w = (30, 40) if n % 2 else (40, 30)
        image = rng.integers(0, 60, size=(h, w, 3)).astype(np.uint8)
        mask = np.zeros((h, w), dtype=np.uint8)
        cls = 1 + n % 2
        mask[5:20, 5:20] = cls
        image[mask == cls] = (230, 40, 40) if cls == 1 else (40, 40, 230)
        Image.fromarray(image).save(root / "JPEGImages" / f"im{n}.png")
        Image.fromarray(mask, mode="L").save(root / "SegmentationClass" / f"im{n}.png")
        ids.append(f"im{n}")
    (root / "ImageSets/Segmentation/train.txt").write_text("\n".join(ids[:6]) + "\n")
    (root / "ImageSets/Segmentation/val.txt").write_text("\n".join(ids[6:]) + "\n")


def test_every_phase_runs_and_the_table_is_written(tmp_path) -> None:
    pytest.importorskip("pydensecrf")
    spec = importlib.util.spec_from_file_location("real_photos", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["real_photos"] = module
    try:
        spec.loader.exec_module(module)
        _voc(tmp_path / "voc")
        tiny = [
            "model.backbone=small_cnn", "model.pretrained=null", "model.output_stride=8",
            "model.freeze_levels=0", "model.channels_last=false", "model.seg_hidden=8",
            "model.proj_dim=8", "data.train_aug.crop_size=24", "data.sampler.groups_per_batch=2",
            "train.max_steps=3", "train.cls_warmup_steps=1", "loss.contrast_start_step=1",
            "optim.warmup_steps=0", "train.eval_every=3", "train.ckpt_every=3",
            "cam.par.num_iter=1", "cam.par.dilations=[1]", "eval.ms_scales=[1.0]",
            "eval.crf.iterations=1", "train.health.enabled=false",
        ]  # fmt: skip
        out = tmp_path / "out"
        status = module.main(
            ["--root", str(tmp_path / "voc"), "--seeds", "1", "--workers", "1", "--out", str(out),
             "--reference", "50", *tiny]
        )  # fmt: skip
    finally:
        sys.modules.pop("real_photos", None)
    assert status == 0
    table = (out / "real_photos.md").read_text()
    for label in ("B (tags only)", "DSCNet (tags only)", "DSCNet + second stage", "full supervision"):
        assert label in table
    assert "raw / full supervision raw" in table and "/ reference 50.0" in table and "wall time" in table
    saved = json.loads((out / "real_photos.json").read_text())["table"]
    assert set(saved) == {"B", "DSCNet", "stage2", "full"}
    assert "second stage − DSCNet (seg, paired by seed)" in table and "coverage of the exported labels" in table
    assert "pseudo_uncertain: background" in (out / "stage2" / "seed0" / "config.yaml").read_text()
    assert all(0.0 <= v <= 1.0 for row in saved.values() for vals in row.values() for v in vals)
    assert len(saved["stage2"]["seg_ms_crf"]) == 1 and len(saved["B"]["cam"]) == 1
    # The second stage trained on the exported labels (one PNG per training image).
    assert len(list((out / "DSCNet" / "seed0" / "pseudo_ms_crf").glob("*.png"))) == 6
    assert "pseudo_ms_crf" in (out / "stage2" / "seed0" / "config.yaml").read_text()


def test_a_run_of_another_config_is_neither_resumed_nor_replaced(tmp_path, capsys) -> None:
    from omegaconf import OmegaConf

    from dscnet.config import load_config

    from . import benchmark_script

    _voc(tmp_path / "voc")
    run_dir = tmp_path / "out" / "full" / "seed0"
    run_dir.mkdir(parents=True)
    # The benchmark's own full-supervision run of seed 0, but with 7 steps instead of 300.
    other = load_config("real_cpu", [
        f"data.root={tmp_path / 'voc'}", "train.progress=false", "train.supervision=full",
        "experiment.seed=0", f"experiment.work_dir={run_dir}", "train.max_steps=7",
    ])  # fmt: skip
    OmegaConf.save(other, run_dir / "config.yaml")
    before = (run_dir / "config.yaml").read_text()
    with benchmark_script("real_photos") as module:
        status = module.main(["--root", str(tmp_path / "voc"), "--rows", "full", "--seeds", "1",
                              "--workers", "1", "--out", str(tmp_path / "out")])  # fmt: skip
    assert status == 2
    err = capsys.readouterr().err
    assert str(run_dir) in err and "another config" in err and "train.max_steps: 7 -> 300" in err
    assert (run_dir / "config.yaml").read_text() == before and not (run_dir / "checkpoints").exists()
