"""benchmarks/label_breakdown.py: known shares on a tiny VOC-layout folder with hand-made
labels, the command end to end, and its refusals (missing / wrong-size PNG, missing folders)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dscnet.data.palette import save_palette_png

from . import benchmark_script
from .test_real_photos import _voc

TRAIN = [f"im{n}" for n in range(6)]  # _voc's train split: 40x30 (even n) and 30x40 (odd n)


@pytest.fixture(scope="module")
def breakdown():
    with benchmark_script("label_breakdown") as module:
        yield module


def _data(tmp_path: Path) -> tuple[Path, Path]:
    """_voc's folder, one true mask with 10 ignored pixels, and labels with known outcomes.

    Per image (object = class ``cls`` on rows/cols 5..19): background row 0 -> 255, row 1 ->
    class 1; object row 5 -> background, row 6 -> 255, row 7 -> the other class.
    """
    root, labels = tmp_path / "voc", tmp_path / "labels"
    _voc(root)
    labels.mkdir()
    seg = root / "SegmentationClass"
    first = np.array(Image.open(seg / "im0.png"))
    first[39, :10] = 255  # skipped, whatever the label says
    Image.fromarray(first, mode="L").save(seg / "im0.png")
    for n, sample in enumerate(TRAIN):
        mask = np.array(Image.open(seg / f"{sample}.png"))
        cls = 1 + n % 2
        lab = mask.copy()
        lab[0, :] = 255
        lab[1, :] = 1
        lab[5, 5:20] = 0
        lab[6, 5:20] = 255
        lab[7, 5:20] = 3 - cls
        lab[mask == 255] = 2
        if n == 1:  # greyscale PNGs are read like the exporter's palette PNGs
            Image.fromarray(lab, mode="L").save(labels / f"{sample}.png")
        else:
            save_palette_png(lab, labels / f"{sample}.png")
    return root, labels


def test_label_confusion_counts_and_outcomes(breakdown) -> None:
    truth = torch.tensor([[0, 0, 0, 1], [1, 1, 2, 255]])
    labels = torch.tensor([[0, 255, 2, 1], [0, 2, 255, 1]])
    conf = breakdown.label_confusion(truth, labels, 3)
    assert conf.shape == (3, 4) and int(conf.sum()) == 7  # the true 255 pixel is skipped
    assert conf.tolist() == [[1, 0, 1, 1], [1, 1, 1, 0], [0, 0, 0, 1]]
    assert breakdown.outcome_counts(conf).tolist() == [[1, 1, 0, 1], [1, 1, 1, 0], [0, 0, 0, 1]]
    with pytest.raises(ValueError, match="outside"):
        breakdown.label_confusion(truth, torch.full((2, 4), 7), 3)


def test_known_shares_table_and_json(breakdown, tmp_path, capsys) -> None:
    root, labels = _data(tmp_path)
    out = tmp_path / "breakdown.json"
    argv = ["--root", str(root), "--split", "train", "--out", str(out), "--labels", str(labels)]
    assert breakdown.main([*argv, "data.ignore_index=255"]) == 0  # an override after --labels
    printed = capsys.readouterr().out
    assert printed.count("### ") == 1
    assert "commit" in printed and "coverage" in printed and "mIoU" in printed
    assert "| true class | true pixels | → itself % | → other object % | → background % | → uncertain % |" in printed
    assert "| objects (all) | 1,350 | 80.0 | 6.7 | 6.7 | 6.7 |" in printed

    report = json.loads(out.read_text())
    assert report["images"] == 6 and report["class_names"] == ["background", "disc", "bar"]
    (folder,) = report["folders"]
    rows = {r["name"]: r for r in folder["rows"]}
    assert [r["name"] for r in folder["rows"]] == ["background", "objects (all)", "disc", "bar"]
    widths = 3 * 30 + 3 * 40  # one row of each of the six images
    bg_true = 6 * (1200 - 225) - 10
    bg = rows["background"]
    assert bg["true_pixels"] == bg_true
    assert bg["shares"] == {"itself": (bg_true - 2 * widths) / bg_true, "other_object": widths / bg_true,
                            "background": None, "uncertain": widths / bg_true}  # fmt: skip
    for name in ("objects (all)", "disc", "bar"):
        n = 1350 if name == "objects (all)" else 675
        lost = (n // 225) * 15
        assert rows[name]["true_pixels"] == n
        assert rows[name]["shares"] == {"itself": (n - 3 * lost) / n, "other_object": lost / n,
                                        "background": lost / n, "uncertain": lost / n}  # fmt: skip
    labelled = 7200 - 10
    assert folder["coverage"] == pytest.approx((labelled - widths - 90) / labelled, abs=1e-12)
    # uncertain counted as background: bg row 5630 bg + 210 disc; disc 540 / 90 bg / 45 bar; bar 540 / 90 / 45 disc
    iou = [5630 / (bg_true + 5630 + 180 - 5630), 540 / (675 + 210 + 540 + 45 - 540), 540 / (675 + 45 + 540 - 540)]
    assert folder["miou"] == pytest.approx(sum(iou) / 3, abs=1e-12)
    assert folder["confusion"]["columns"][-1] == "uncertain"
    assert folder["confusion"]["counts"][0] == [bg_true - 2 * widths, widths, 0, widths]


def test_missing_or_wrong_size_png_and_missing_folders_exit_2(breakdown, tmp_path, capsys) -> None:
    root, labels = _data(tmp_path)
    (labels / "im3.png").unlink()
    assert breakdown.main(["--root", str(root), "--labels", str(labels)]) == 2
    err = capsys.readouterr().err
    assert "im3.png" in err and "not found" in err
    save_palette_png(np.zeros((30, 40), dtype=np.uint8), labels / "im3.png")
    save_palette_png(np.zeros((30, 40), dtype=np.uint8), labels / "im2.png")  # im2 is 40x30 (H x W)
    assert breakdown.main(["--root", str(root), "--labels", str(labels)]) == 2
    err = capsys.readouterr().err
    assert "im2.png" in err and "size 40x30 differs" in err
    assert breakdown.main(["--root", str(tmp_path / "nowhere"), "--labels", str(labels)]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert breakdown.main(["--root", str(root), "--labels", str(labels), str(tmp_path / "nolabels")]) == 2
    assert "nolabels" in capsys.readouterr().err
