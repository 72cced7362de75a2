"""Fixtures shared by the data tests: tiny datasets written into tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.data.datahelpers import rgb_image, save_palette_png


@pytest.fixture
def tiny_voc(tmp_path: Path) -> dict:
    """A 4-image VOC-layout dataset with 3 custom classes, classes.txt and masks.

    Image i is 20x24 (h x w); masks hold known rectangles. ``cls_labels.npy`` is *not*
    written: tests add it when they need it.
    """
    root = tmp_path / "voc"
    classes = ["background", "cat", "dog", "bird"]
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "JPEGImages").mkdir(parents=True)
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    masks = {}
    ids = [f"img{i}" for i in range(4)]
    for i, sid in enumerate(ids):
        mask = np.zeros((20, 24), dtype=np.uint8)
        if i == 0:
            mask[2:8, 3:9] = 1
        elif i == 1:
            mask[2:8, 3:9] = 2
            mask[10:15, 10:20] = 3
        elif i == 2:
            mask[5:10, 5:10] = 3
            mask[0, :] = 255
        # image 3: background only (no tag)
        masks[sid] = mask
        Image.fromarray(rgb_image(20, 24, i)).save(root / "JPEGImages" / f"{sid}.png")
        save_palette_png(root / "SegmentationClass" / f"{sid}.png", mask)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(ids[:3]) + "\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids) + "\n")
    return {"root": root, "ids": ids, "masks": masks, "classes": classes}
