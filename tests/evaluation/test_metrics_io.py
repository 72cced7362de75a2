"""metrics.json / metrics.txt / confusion.png writing."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from dscnet.evaluation import compute_metrics, format_table, read_metrics, write_metrics

HAND = np.array([[5, 1, 0, 0], [2, 3, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=np.int64)
NAMES = ["background", "cat", "dog", "unicorn"]


def test_write_metrics_round_trip(tmp_path) -> None:
    metrics = compute_metrics(HAND)
    paths = write_metrics(
        tmp_path / "eval" / "val",
        metrics,
        NAMES,
        HAND,
        title="toy val, scales [1.0]",
        extra={"split": "val", "scales": np.array([1.0, 0.5]), "crf": False},
    )
    assert set(paths) == {"json", "txt", "png"} and all(p.is_file() for p in paths.values())

    raw = json.loads(paths["json"].read_text())  # strict JSON: NaN was written as null
    assert raw["iou"][3] is None and raw["precision"][3] is None
    assert raw["per_class"]["unicorn"] == {
        "iou": None,
        "precision": None,
        "recall": None,
        "pixels": 0,
    }
    assert raw["per_class"]["cat"]["iou"] == pytest.approx(3 / 7)
    assert raw["confusion"] == HAND.tolist()
    assert raw["class_names"] == NAMES and raw["num_classes"] == 4
    assert raw["extra"] == {"split": "val", "scales": [1.0, 0.5], "crf": False}
    assert raw["title"] == "toy val, scales [1.0]"

    back = read_metrics(paths["json"])
    assert math.isnan(back["iou"][3])
    np.testing.assert_allclose(back["iou"][:3], metrics["iou"][:3])
    assert back["miou"] == pytest.approx(metrics["miou"])

    text = paths["txt"].read_text()
    assert text.splitlines()[0] == "toy val, scales [1.0]"
    assert f"mIoU {100 * metrics['miou']:.2f}" in text
    unicorn = next(line for line in text.splitlines() if line.startswith("unicorn"))
    assert unicorn.split() == ["unicorn", "-", "-", "-", "0", "0"]
    cat = next(line for line in text.splitlines() if line.startswith("cat"))
    assert cat.split()[1:4] == ["42.86", "75.00", "50.00"]


def test_format_table_checks_lengths() -> None:
    with pytest.raises(ValueError, match="3 class names"):
        format_table(compute_metrics(HAND), NAMES[:3])
    with pytest.raises(ValueError, match="does not match 3 class names"):
        write_metrics("unused", compute_metrics(HAND[:3, :3]), NAMES[:3], HAND, title="x")


@pytest.mark.parametrize("k", [21, 81])
def test_confusion_png_is_valid_and_scales_with_classes(tmp_path, k: int) -> None:
    rng = np.random.default_rng(k)
    m = rng.integers(0, 50, size=(k, k)) + np.diag(rng.integers(100, 1000, size=k))
    m[3] = 0  # a class without ground truth must not break row normalisation
    names = ["background"] + [f"class_{i:02d}" for i in range(1, k)]
    paths = write_metrics(tmp_path, compute_metrics(m), names, m, title=f"{k} classes")
    with Image.open(paths["png"]) as im:
        assert im.format == "PNG"
        im.verify()
    with Image.open(paths["png"]) as im:
        w, h = im.size
    # Big enough that every tick label gets ~>= 8 px, small enough to open comfortably.
    assert 8 * k <= h <= 2500 and 8 * k <= w <= 2800
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes left no temporaries
