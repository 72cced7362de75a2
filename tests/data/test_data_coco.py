"""COCO from a tiny instances JSON written by the test: tags and pixel-exact masks."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from dscnet.config import load_config
from dscnet.data.build import build_dataset, class_names
from dscnet.data.coco import COCODataset
from dscnet.errors import DatasetError
from tests.data.datahelpers import rgb_image


def _rect(x0: int, y0: int, x1: int, y1: int) -> list[list[float]]:
    # COCO polygons rasterise [x0, x1) x [y0, y1) for integer corners.
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


@pytest.fixture
def tiny_coco(tmp_path):
    root = tmp_path / "coco"
    (root / "val2014").mkdir(parents=True)
    (root / "annotations").mkdir()
    sizes = {1: (30, 40), 2: (16, 16), 3: (10, 12)}
    images = []
    for img_id, (h, w) in sizes.items():
        name = f"COCO_val2014_{img_id:012d}.jpg"
        Image.fromarray(rgb_image(h, w, img_id)).save(root / "val2014" / name, quality=95)
        images.append({"id": img_id, "file_name": name, "height": h, "width": w})
    crowd = np.zeros((30, 40), dtype=np.uint8, order="F")
    crowd[20:28, 25:35] = 1
    rle = mask_utils.encode(np.asfortranarray(crowd))
    rle["counts"] = rle["counts"].decode("ascii")
    anns = [
        {"id": 10, "image_id": 1, "category_id": 5, "segmentation": _rect(2, 3, 10, 9), "iscrowd": 0, "area": 48, "bbox": [2, 3, 8, 6]},
        {"id": 11, "image_id": 1, "category_id": 1, "segmentation": _rect(8, 5, 20, 15), "iscrowd": 0, "area": 120, "bbox": [8, 5, 12, 10]},
        {"id": 12, "image_id": 1, "category_id": 90, "segmentation": rle, "iscrowd": 1, "area": 80, "bbox": [25, 20, 10, 8]},
        {"id": 13, "image_id": 2, "category_id": 1, "segmentation": _rect(0, 0, 16, 4), "iscrowd": 0, "area": 64, "bbox": [0, 0, 16, 4]},
    ]  # fmt: skip
    cats = [
        {"id": 1, "name": "person", "supercategory": "person"},
        {"id": 5, "name": "airplane", "supercategory": "vehicle"},
        {"id": 90, "name": "toothbrush", "supercategory": "indoor"},
    ]
    ann_file = root / "annotations" / "instances_val2014.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root


def test_classes_tags_and_contiguous_labels(tiny_coco):
    ds = COCODataset(tiny_coco, "val", "val2014", "annotations/instances_val2014.json")
    assert ds.class_names == ["background", "person", "airplane", "toothbrush"]
    assert ds.cat_to_label == {1: 1, 5: 2, 90: 3}
    assert ds.ids == [f"COCO_val2014_{i:012d}" for i in (1, 2, 3)]
    # Crowd-only classes are tagged (the class is in the picture).
    np.testing.assert_array_equal(ds.tags, [[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    assert ds.has_masks


def test_masks_are_pixel_exact(tiny_coco):
    ds = COCODataset(tiny_coco, "val", "val2014", "annotations/instances_val2014.json")
    expected = np.zeros((30, 40), np.uint8)
    expected[20:28, 25:35] = 255  # crowd -> ignore
    expected[3:9, 2:10] = 2  # airplane
    expected[5:15, 8:20] = 1  # person, annotated later, wins where they overlap
    np.testing.assert_array_equal(ds.load_mask(0), expected)
    second = np.zeros((16, 16), np.uint8)
    second[0:4, :] = 1
    np.testing.assert_array_equal(ds.load_mask(1), second)
    np.testing.assert_array_equal(ds.load_mask(2), np.zeros((10, 12), np.uint8))
    image, mask = ds.load_sample(0)
    assert image.shape == (30, 40, 3) and mask.shape == (30, 40)


def test_build_dataset_for_coco_skips_untagged_in_training(tiny_coco, caplog):
    cfg = load_config("base", ["data.type=coco", f"data.root={tiny_coco}", "data.train_split=val"])
    assert class_names(cfg) == ["background", "person", "airplane", "toothbrush"]
    with caplog.at_level(logging.WARNING, logger="dscnet.data"):
        train = build_dataset(cfg, "val", train=True)
    assert len(train) == 2
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"skipped 1 images with no tags in {tiny_coco / 'annotations' / 'instances_val2014.json'}"
    ]
    evaluation = build_dataset(cfg, "val", train=False)
    assert len(evaluation) == 3
    item = evaluation[0]
    assert item["mask"].shape == (30, 40) and int(item["mask"][20, 25]) == 255


def test_missing_and_corrupt_annotation_files(tiny_coco):
    with pytest.raises(
        DatasetError, match=r"instances_train2014\.json: COCO annotation file not found"
    ):
        COCODataset(tiny_coco, "train", "val2014", "annotations/instances_train2014.json")
    bad = tiny_coco / "annotations" / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DatasetError, match=r"bad\.json: not a valid COCO JSON file"):
        COCODataset(tiny_coco, "val", "val2014", bad)
    with pytest.raises(DatasetError, match=r"train2014: COCO image folder not found"):
        COCODataset(tiny_coco, "val", "train2014", "annotations/instances_val2014.json")


def test_missing_image_file_is_named(tiny_coco):
    (tiny_coco / "val2014" / "COCO_val2014_000000000002.jpg").unlink()
    with pytest.raises(
        DatasetError,
        match=r"1 images are missing from .*val2014 \(e\.g\. COCO_val2014_000000000002\.jpg\)",
    ):
        COCODataset(tiny_coco, "val", "val2014", "annotations/instances_val2014.json")
