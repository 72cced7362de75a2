"""The HTML run report, built from a fake run directory written here."""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dscnet.errors import DscnetError
from dscnet.evaluation import compute_metrics, write_metrics
from dscnet.visualize import example_strip, write_report
from dscnet.visualize.report import read_scalars

NAMES = ["background", "disc", "square", "triangle", "ring", "cross", "star"]


def _scene(rng: np.random.Generator, size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A toy image, its truth mask and multi-hot tags over the 6 foreground classes."""
    yy, xx = np.mgrid[:size, :size]
    truth = np.zeros((size, size), np.uint8)
    tags = np.zeros(len(NAMES) - 1, np.float32)
    for c in rng.choice(np.arange(1, len(NAMES)), size=2, replace=False):
        cy, cx, r = rng.integers(12, size - 12, 2).tolist() + [int(rng.integers(6, 12))]
        truth[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = c
        tags[c - 1] = 1
    truth[:2] = 255
    image = (rng.random((size, size, 3)) * 60 + 90).astype(np.uint8)
    image[truth > 0] = (image[truth > 0] * 0.5).astype(np.uint8)
    return image, truth, tags


def make_run_dir(root: Path, n_examples: int = 6) -> Path:
    """A run dir as the trainer writes it, with the usual damage: a torn last scalars line,
    an example whose image is missing, one without a score, one pointing outside the dir."""
    rng = np.random.default_rng(0)
    run = root / "run 1"  # a space, to check links are URL-escaped
    (run / "examples").mkdir(parents=True)
    (run / "config.yaml").write_text("model:\n  backbone: <script>alert(1)</script>\nseed: 0\n")

    lines = []
    for step in range(0, 200, 10):
        rec = {
            "step": step,
            "loss/total": 2.0 * math.exp(-step / 80),
            "loss/cls": 0.7 * math.exp(-step / 60),
            "lr": 0.01 * (1 - step / 200),
        }
        if step >= 50:
            rec["loss/seg"] = 1.0 * math.exp(-(step - 50) / 70)
        if step % 50 == 0:
            rec["val/seg_miou"] = 0.2 + 0.5 * step / 200
            rec["val/cam_miou"] = 0.15 + 0.4 * step / 200
        lines.append(json.dumps(rec))
    lines.append('{"step": 200, "loss/tot')  # killed mid-write
    (run / "scalars.jsonl").write_text("\n".join(lines) + "\n")

    k = len(NAMES)
    for name, noise in (("val", 20), ("val_ms_flip", 10)):
        m = rng.integers(0, noise, size=(k, k)) + np.diag(rng.integers(200, 900, size=k))
        write_metrics(
            run / "eval" / name,
            compute_metrics(m),
            NAMES,
            m,
            title=f"synth {name}",
            extra={"split": "val", "crf": False},
        )

    index = []
    for i in range(n_examples):
        image, truth, tags = _scene(rng)
        cams = rng.random((k - 1, 16, 16)).astype(np.float32)
        pred = truth.copy()
        pred[truth == 255] = 0
        pred[: 8 * i, :20] = 1  # later examples are worse
        strip = example_strip(image, cams, tags, truth, pred, truth, NAMES, title=f"img{i}")
        Image.fromarray(strip).save(run / "examples" / f"img{i}_strip.png")
        index.append(
            {"id": f"img{i}", "image": f"examples/img{i}_strip.png", "miou": 0.9 - 0.1 * i}
        )
    index.append({"id": "gone", "image": "examples/gone_strip.png", "miou": 0.05})
    index.append({"id": "unscored", "image": "examples/img0_strip.png", "miou": None})
    index.append({"id": "escape", "image": "../../outside.png", "miou": 0.01})
    (root / "outside.png").write_bytes(b"not inside the run")
    (run / "examples" / "index.json").write_text(json.dumps(index))
    return run


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.hrefs: list[str] = []
        self.ids: list[str] = []
        self.captions: list[str] = []
        self._in_caption = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a["src"])
        if tag == "a" and not a["href"].startswith("#"):
            self.hrefs.append(a["href"])
        if "id" in a:
            self.ids.append(a["id"])
        self._in_caption = tag == "figcaption"

    def handle_endtag(self, tag):
        if tag == "figcaption":
            self._in_caption = False

    def handle_data(self, data):
        if self._in_caption:
            self.captions.append(data.strip())


def _parse(path: Path) -> _Collector:
    c = _Collector()
    c.feed(path.read_text())
    return c


def test_report_from_full_run_dir(tmp_path) -> None:
    from urllib.parse import unquote

    run = make_run_dir(tmp_path)
    report = write_report(run)
    assert report == run / "report.html"
    page = report.read_text()
    doc = _parse(report)

    assert {"curves", "evaluation", "examples", "config", "eval-val", "eval-val_ms_flip"} <= set(
        doc.ids
    )
    # Every image link is relative, resolves, and stays inside the run dir.
    assert doc.hrefs  # the confusion matrices link to their full-size PNGs
    for src in doc.imgs + doc.hrefs:
        assert not src.startswith(("/", "file:", "http")), src
        target = (report.parent / unquote(src)).resolve()
        assert target.is_file(), src
        target.relative_to(run.resolve())
    srcs = {unquote(s) for s in doc.imgs}
    assert {
        "report_files/curves_loss.png",
        "report_files/curves_val.png",
        "report_files/curves_other.png",
    } <= srcs
    assert {"eval/val/confusion.png", "eval/val_ms_flip/confusion.png"} <= srcs
    for group in ("loss", "val", "other"):
        with Image.open(run / "report_files" / f"curves_{group}.png") as im:
            im.verify()

    # Examples worst first; unscored last; missing and escaping images not linked.
    ids = [c.split(" ")[0] for c in doc.captions]
    assert ids == ["escape", "gone", "img5", "img4", "img3", "img2", "img1", "img0", "unscored"]
    assert "image examples/gone_strip.png missing or outside the run directory" in page
    assert "outside.png" not in " ".join(doc.imgs)
    assert "1 unreadable line(s)" in page
    # Per-class table values and escaping of user text.
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page
    assert page.count("<th>class</th>") == 2 and "triangle" in page
    assert "not available" not in page


def test_report_limits_examples(tmp_path) -> None:
    (tmp_path / "examples").mkdir()
    index = []
    for i, score in enumerate([0.5, 0.1, 0.9, 0.3]):
        Image.new("RGB", (8, 4)).save(tmp_path / "examples" / f"e{i}.png")
        index.append({"id": f"e{i}", "image": f"examples/e{i}.png", "miou": score})
    (tmp_path / "examples" / "index.json").write_text(json.dumps(index))
    doc = _parse(write_report(tmp_path, max_examples=2))
    assert [c.split(" ")[0] for c in doc.captions] == ["e1", "e3"]
    assert doc.imgs == ["examples/e1.png", "examples/e3.png"]


def test_report_of_empty_run_dir_says_not_available(tmp_path) -> None:
    page = write_report(tmp_path).read_text()
    for what in ("Training curves", "Evaluation results", "Examples", "Config"):
        assert f"{what} (" in page
    assert page.count("not available") == 4
    assert "<img" not in page


def test_report_survives_broken_parts(tmp_path) -> None:
    (tmp_path / "eval" / "bad").mkdir(parents=True)
    (tmp_path / "eval" / "bad" / "metrics.json").write_text("{not json")
    (tmp_path / "eval" / "partial").mkdir(parents=True)
    (tmp_path / "eval" / "partial" / "metrics.json").write_text(json.dumps({"miou": 0.5}))
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "index.json").write_text('{"id": 1}')
    (tmp_path / "scalars.jsonl").write_text('{"step": 1, "note": "text only"}\n[1, 2]\n')
    page = write_report(tmp_path).read_text()
    assert "metrics.json could not be read" in page
    assert "50.00" in page and "class_names / iou missing" in page
    assert "Confusion matrix image: not available" in page
    assert "examples/index.json is not a list" in page
    assert "holds no numeric values" in page


def test_scalars_parsing(tmp_path) -> None:
    p = tmp_path / "scalars.jsonl"
    p.write_text(
        '{"step": 5, "a": 1.5, "b": true, "c": "x"}\n\n{"a": NaN}\ngarbage\n{"step": 7, "a": 2}\n'
    )
    series, bad = read_scalars(p)
    assert bad == 1 and set(series) == {"a"}
    assert series["a"][0] == (5.0, 1.5) and series["a"][2] == (7.0, 2.0)
    assert series["a"][1][0] == 2.0 and math.isnan(series["a"][1][1])  # no step: line number


def test_report_requires_a_directory(tmp_path) -> None:
    with pytest.raises(DscnetError, match="does not exist"):
        write_report(tmp_path / "nope")
