"""The ``dscnet`` command end to end on a tiny synthetic set (each step a few seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dscnet.cli.main import main
from tests.conftest import TINY_OVERRIDES


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("cli") / "run"
    status = main(["train", "--config", "synth_cpu", *TINY_OVERRIDES, f"experiment.work_dir={run}"])
    assert status == 0
    return run


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert "dscnet 0.1.0" in capsys.readouterr().out


def test_train_writes_checkpoint_and_eval_reports_each_protocol(trained: Path, capsys):
    ckpt = trained / "checkpoints" / "last.pth"
    assert ckpt.is_file()
    out = trained / "eval_cli"
    assert main(["eval", "--checkpoint", str(ckpt), "--what", "all", "--ms", "--crf", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"seg/raw", "seg/msf", "seg/raw_crf", "seg/msf_crf", "cam/raw", "cam/msf", "pseudo/raw", "pseudo/msf"}
    assert all(0.0 <= v["miou"] <= 1.0 for v in summary.values())
    assert 0.0 <= summary["pseudo/raw"]["coverage"] <= 1.0
    metrics = json.loads((out / "seg_msf_crf" / "metrics.json").read_text())
    assert metrics["extra"]["crf"] is True and metrics["extra"]["scales"] == [0.5, 0.75, 1.0, 1.25]
    n = metrics["extra"]["images"]
    assert metrics["extra"]["subset"] is None and n == metrics["extra"]["split_images"] > 0
    assert metrics["title"].startswith(f"seg (msf_crf) on val, all {n} images: ")
    assert "seg/msf_crf" in capsys.readouterr().out


def test_threshold_sweeps_checkpoints_and_names_the_best(trained: Path, tmp_path: Path, capsys):
    ckpt = str(trained / "checkpoints" / "last.pth")
    out = tmp_path / "sweep.json"
    args = ["threshold", "--checkpoint", ckpt, ckpt, "--thresholds", "0.3,0.5", "--json", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    sweep = json.loads(out.read_text())
    assert [r["bg_threshold"] for r in sweep["summary"]] == [0.3, 0.5]
    assert [r["low"] for r in sweep["summary"]] == pytest.approx([0.2, 0.4])  # the band follows
    # The same checkpoint twice: the mean is its score, the spread is zero.
    first = sweep["per_checkpoint"][0]
    assert [r["miou_std"] for r in sweep["summary"]] == [0.0, 0.0]
    assert [r["miou"] for r in sweep["summary"]] == pytest.approx([100 * r["miou"] for r in first])
    best = max(sweep["summary"], key=lambda r: r["miou"])["bg_threshold"]
    assert f"best: cam.bg_threshold={best:g}" in printed and "mean ± std over 2 checkpoint(s)" in printed

    assert main(["threshold", "--checkpoint", ckpt, "--thresholds", "0.3,abc"]) == 2
    assert "'abc' is not a number" in capsys.readouterr().err
    assert main(["threshold", "--checkpoint", ckpt, "--thresholds", "0.3,1.5"]) == 2
    assert "1.5 lies outside [0, 1]" in capsys.readouterr().err
    assert main(["threshold", "--checkpoint", ckpt, "--band", "-0.1"]) == 2
    assert "--band must be >= 0" in capsys.readouterr().err


def test_predict_pseudo_export_report(trained: Path, tmp_path: Path):
    ckpt = str(trained / "checkpoints" / "last.pth")
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (37, 53, 3), dtype=np.uint8)).save(images / "a.png")
    (images / "broken.jpg").write_bytes(b"not a jpeg")
    status = main(["predict", "--checkpoint", ckpt, str(images), "--out", str(tmp_path / "pred")])
    assert status == 1  # one file failed, the other was written
    with Image.open(tmp_path / "pred" / "a.png") as mask:
        assert mask.size == (53, 37) and mask.mode == "P"

    assert main(["pseudo", "--checkpoint", ckpt, "--split", "val", "--out", str(tmp_path / "pseudo")]) == 0
    assert len(list((tmp_path / "pseudo").glob("*.png"))) == 12

    onnx_path = tmp_path / "model.onnx"
    assert main(["export", "--checkpoint", ckpt, "--format", "onnx", "--out", str(onnx_path)]) == 0
    assert onnx_path.stat().st_size > 10_000

    assert main(["report", str(trained)]) == 0
    html = (trained / "report.html").read_text()
    assert "final/seg" in html and "IoU %" in html
    assert html.count("_strip.png") >= 12  # every validation example of the tiny set


def test_user_errors_exit_2_with_a_message(tmp_path: Path, capsys):
    assert main(["train", "--config", "does_not_exist"]) == 2
    assert "config file not found: does_not_exist" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(tmp_path / "missing.pth")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert main(["train", "--config", "synth_cpu", "train.max_stepz=3"]) == 2
    assert "unknown config key 'train.max_stepz'" in capsys.readouterr().err
    root = tmp_path / "no_voc"
    assert main(["train", "--config", "voc_vit", f"data.root={root}", "model.pretrained=null"]) == 2
    assert str(root) in capsys.readouterr().err


def test_data_synth_writes_voc_layout(tmp_path: Path):
    out = tmp_path / "synth"
    assert main(["data", "synth", "--out", str(out), "--preview", "4", "data.synth.num_train=6", "data.synth.num_val=2", "data.synth.image_size=48"]) == 0
    assert len((out / "ImageSets" / "Segmentation" / "train.txt").read_text().split()) == 6
    assert (out / "preview.png").is_file() and (out / "classes.txt").is_file()


def test_demo_and_ablate_on_tiny_settings(tmp_path: Path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--examples", "3", *TINY_OVERRIDES]) == 0
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    for key in ("cam_miou", "pseudo_miou", "seg_miou", "fully_supervised_seg_miou"):
        assert 0.0 <= summary[key] <= 1.0
    assert (tmp_path / "demo" / "weak" / "examples" / "grid.png").is_file()
    assert "segmentation mIoU (full masks)" in capsys.readouterr().out

    status = main(["ablate", "--config", "synth_cpu", "--seeds", "2", "--rows", "B,DSCNet", "--workers", "2", "--out", str(tmp_path / "abl"), *TINY_OVERRIDES, "train.max_steps=3"])
    assert status == 0
    table = (tmp_path / "abl" / "ablation.md").read_text()
    assert "| B |" in table and "| DSCNet |" in table and "± " in table
    results = json.loads((tmp_path / "abl" / "ablation.json").read_text())["results"]
    assert len(results["DSCNet"]["seg"]) == 2
    assert (tmp_path / "abl" / "cams_B_vs_DSCNet.png").is_file()
    assert "CAM on train; pseudo label on train; segmentation on val" in table

    # --resume reuses the finished runs: evaluated again, not retrained, same numbers.
    ckpt = tmp_path / "abl" / "DSCNet" / "seed1" / "checkpoints" / "last.pth"
    stamp = ckpt.stat().st_mtime_ns
    again = ["ablate", "--config", "synth_cpu", "--seeds", "2", "--rows", "B,DSCNet", "--resume", "--out", str(tmp_path / "abl"), *TINY_OVERRIDES, "train.max_steps=3"]
    assert main(again) == 0
    assert ckpt.stat().st_mtime_ns == stamp
    rerun = json.loads((tmp_path / "abl" / "ablation.json").read_text())["results"]
    for row in ("B", "DSCNet"):
        for key in ("cam", "pseudo", "seg", "step_seconds"):
            assert rerun[row][key] == results[row][key], (row, key)


def test_demo_with_the_pretrained_backbone_on_real_photos(tmp_path: Path, capsys):
    status = main(
        ["demo", "--backbone", "efficientnet_lite0", "--no-upper-bound", "--examples", "2", "--out", str(tmp_path), *TINY_OVERRIDES, "train.max_steps=2"]
    )
    assert status == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["backbone"] == "efficientnet_lite0" and summary["data"] == "synth_photo"
    assert summary["fully_supervised_seg_miou"] is None
    assert "efficientnet_lite0 on synth_photo" in capsys.readouterr().out
