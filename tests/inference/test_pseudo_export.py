"""Pseudo-label export over a tiny dataset double: PNGs, ids, fill option, metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

from dscnet.config import load_config
from dscnet.errors import DatasetError
from dscnet.inference.pseudo_export import export_pseudo_labels, label_path

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


class SquaresDataset(Dataset):
    """Coloured squares on black; items as dscnet's TransformedDataset returns them."""

    class_names = ["background", "red", "green"]

    def __init__(self, with_masks: bool = True, wrong_tags: bool = False) -> None:
        self.items = []
        specs = [("red_0", 0, (8, 24, 8, 24), (40, 36)), ("sub/green_1", 1, (0, 16, 4, 28), (32, 32))]
        for sample_id, cls, (y0, y1, x0, x1), (h, w) in specs:
            rgb = torch.zeros(3, h, w)
            rgb[cls, y0:y1, x0:x1] = 1.0
            mask = torch.zeros(h, w, dtype=torch.long)
            mask[y0:y1, x0:x1] = cls + 1
            tags = torch.zeros(2)
            tags[(1 - cls) if wrong_tags else cls] = 1
            self.items.append(
                {
                    "image": (rgb - MEAN) / STD,
                    "tags": tags,
                    "mask": mask if with_masks else torch.full((h, w), 255),
                    "index": len(self.items),
                    "id": sample_id,
                }
            )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


@pytest.fixture(scope="module")
def cfg():
    # --ms CAMs at two scales with flips, at full working size (the squares are small).
    return load_config("base", ["cam.export_scales=[1.0,0.75]", "cam.export_flip=true", "cam.par.scale=1.0"])


def _png(path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "P"
        return np.array(im)


def test_writes_voc_pngs_and_scores_them(colour_model, cfg, tmp_path) -> None:
    ds = SquaresDataset()
    metrics = export_pseudo_labels(colour_model, ds, tmp_path, cfg, ms=True, progress=False)
    red = _png(tmp_path / "red_0.png")
    green = _png(tmp_path / "sub" / "green_1.png")
    assert red.shape == (40, 36) and green.shape == (32, 32)
    assert set(np.unique(red)) <= {0, 1, 255} and set(np.unique(green)) <= {0, 2, 255}
    # Known answer away from the square's border (the border is the uncertain band).
    assert (red[11:21, 11:21] == 1).all() and (red[30:, :] == 0).all() and (red[:, 30:] == 0).all()
    assert (green[:12, 7:25] == 2).all() and (green[22:] == 0).all()

    assert metrics is not None
    # PAR snaps the blurred CAM borders to the colour edges: perfect labels, nothing ignored.
    assert metrics["miou"] == pytest.approx(1.0) and metrics["ignore_fraction"] == 0.0
    assert metrics["num_images"] == 2 and len(metrics["iou"]) == 3
    assert "ground-truth tags" in metrics["protocol"]
    saved = json.loads((tmp_path / "pseudo_metrics.json").read_text())
    assert saved["miou"] == pytest.approx(metrics["miou"])


def test_without_par_the_border_is_uncertain(colour_model, cfg, tmp_path) -> None:
    cfg = cfg.copy()
    cfg.cam.par.enabled = False
    metrics = export_pseudo_labels(colour_model, SquaresDataset(), tmp_path, cfg, ms=True, progress=False)
    assert metrics is not None
    assert 0.01 < metrics["ignore_fraction"] < 0.2
    # Uncertain pixels count as background in `miou`, and are left out of `miou_confident`.
    assert metrics["miou"] < 0.99 and metrics["confident_miou"] > metrics["miou"]
    assert 255 in _png(tmp_path / "red_0.png")


def test_fill_ignore_and_no_masks(colour_model, cfg, tmp_path) -> None:
    result = export_pseudo_labels(
        colour_model, SquaresDataset(with_masks=False), tmp_path, cfg,
        fill_ignore=True, scales=[1.0], flip=False, progress=False,
    )
    assert result is None and not (tmp_path / "pseudo_metrics.json").exists()
    red = _png(tmp_path / "red_0.png")
    assert 255 not in red and (red[11:21, 11:21] == 1).all()


def test_labels_follow_the_ground_truth_tags(colour_model, cfg, tmp_path) -> None:
    cfg = cfg.copy()
    cfg.cam.par.enabled = False
    metrics = export_pseudo_labels(colour_model, SquaresDataset(wrong_tags=True), tmp_path, cfg, ms=True, progress=False)
    # The only tagged class has no activation: every pixel is background.
    assert (_png(tmp_path / "red_0.png") == 0).all()
    assert metrics is not None and metrics["iou"][1] == 0.0


def test_ids_cannot_escape_the_output_folder(tmp_path) -> None:
    assert label_path(tmp_path, "a/b") == tmp_path / "a" / "b.png"
    for bad in ("../x", "/abs/x", ""):
        with pytest.raises(DatasetError, match="output file name"):
            label_path(tmp_path, bad)


def test_crf_export_resolves_the_uncertain_border(colour_model, cfg, tmp_path) -> None:
    pytest.importorskip("pydensecrf")
    from dscnet.inference.crf import CrfParams

    cfg = cfg.copy()
    cfg.cam.par.enabled = False  # without PAR the blurred CAM border is uncertain ...
    plain = export_pseudo_labels(colour_model, SquaresDataset(), tmp_path / "plain", cfg, ms=True, progress=False)
    crf = export_pseudo_labels(
        colour_model, SquaresDataset(), tmp_path / "crf", cfg, ms=True, crf=CrfParams(), progress=False
    )
    assert plain is not None and crf is not None
    # ... and the CRF decides it from the colour edges: fewer uncertain pixels, better labels.
    assert crf["ignore_fraction"] < plain["ignore_fraction"] and crf["miou"] > plain["miou"]
    assert "CRF=on" in crf["protocol"]


def test_export_without_ms_writes_the_online_labels(tmp_path) -> None:
    """The exported labels are the online rule's, at its own working scale (issue 22: the
    export used to run PAR at full size, where the thresholds chosen for the online labels no
    longer fit: on msrc-dev B's labels lost 3.3 mIoU and the second stage painted background)."""
    from dscnet.cam.labeler import build_pseudo_labeler

    from .conftest import ColourModel

    cfg = load_config("base", ["cam.par.scale=0.5", "cam.par.enabled=false", "cam.bg_threshold=0.3", "cam.low=0.2", "cam.high=0.4"])
    model, ds = ColourModel(stride=8).eval(), SquaresDataset()
    export_pseudo_labels(model, ds, tmp_path, cfg, progress=False)
    online = build_pseudo_labeler(cfg)
    at_full_size = online.variant(scale=1.0)
    differs = 0
    for item in ds:
        images, tags = item["image"][None], item["tags"][None]
        expected = online(images, tags, model=model)[0].numpy()
        np.testing.assert_array_equal(_png(label_path(tmp_path, item["id"])), expected)
        differs += int((at_full_size(images, tags, model=model)[0].numpy() != expected).sum())
    assert differs > 0  # the working scale matters here: a full-size export would differ


def test_ms_export_uses_the_export_scales(colour_model, tmp_path) -> None:
    cfg = load_config("base", ["cam.export_scales=[1.0,0.5]", "cam.export_flip=false"])
    metrics = export_pseudo_labels(colour_model, SquaresDataset(), tmp_path, cfg, ms=True, progress=False)
    assert metrics is not None and "scales=[1.0, 0.5], flip=False" in metrics["protocol"]
    assert "working scale=0.5" in metrics["protocol"]
