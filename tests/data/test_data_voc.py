"""VOC layout: class lists, labels file or derived tags, splits, and bad input."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from dscnet.data.base import VOC_CLASSES, TransformedDataset, drop_untagged
from dscnet.data.transforms import EvalTransform
from dscnet.data.voc import VOCDataset
from dscnet.errors import DatasetError
from tests.data.datahelpers import rgb_image, save_palette_png


def test_classes_txt_and_tags_derived_from_masks(tiny_voc):
    ds = VOCDataset(tiny_voc["root"], "val")
    assert ds.class_names == tiny_voc["classes"]
    assert ds.ids == tiny_voc["ids"] and ds.has_masks
    np.testing.assert_array_equal(ds.tags, [[1, 0, 0], [0, 1, 1], [0, 0, 1], [0, 0, 0]])
    for i, sid in enumerate(ds.ids):
        np.testing.assert_array_equal(ds.load_mask(i), tiny_voc["masks"][sid])
        np.testing.assert_array_equal(ds.load_image(i), rgb_image(20, 24, i))
    assert ds.source.endswith("ImageSets/Segmentation/val.txt")


def test_labels_file_wins_over_masks(tiny_voc):
    root = tiny_voc["root"]
    labels = {sid: np.array([1, 1, 1], np.float32) for sid in tiny_voc["ids"]}
    np.save(root / "cls_labels.npy", labels, allow_pickle=True)
    ds = VOCDataset(root, "train")
    assert (ds.tags == 1).all() and ds.tags.dtype == np.uint8


def test_labels_file_of_wrong_length_is_explained(tiny_voc):
    root = tiny_voc["root"]
    np.save(root / "cls_labels.npy", {s: np.ones(4, np.float32) for s in tiny_voc["ids"]})
    with pytest.raises(
        DatasetError, match=r"cls_labels\.npy: labels of 'img0' have length 4.*include background"
    ):
        VOCDataset(root, "train")


def test_default_voc_classes_without_classes_txt(tiny_voc):
    (tiny_voc["root"] / "classes.txt").unlink()
    ds = VOCDataset(tiny_voc["root"], "train")
    assert ds.class_names == list(VOC_CLASSES) and ds.tags.shape == (3, 20)
    np.testing.assert_array_equal(ds.tags[1, :3], [0, 1, 1])


def test_segmentation_class_aug_is_preferred_and_train_aug_split(tiny_voc):
    root = tiny_voc["root"]
    for i, sid in enumerate(tiny_voc["ids"]):
        save_palette_png(
            root / "SegmentationClassAug" / f"{sid}.png", np.full((20, 24), 1 + i % 3, np.uint8)
        )
    (root / "ImageSets" / "SegmentationAug").mkdir()
    # DeepLab-style list lines: "/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png".
    (root / "ImageSets" / "SegmentationAug" / "train_aug.txt").write_text(
        "".join(f"/JPEGImages/{s}.jpg /SegmentationClassAug/{s}.png\n" for s in tiny_voc["ids"])
    )
    ds = VOCDataset(root, "train_aug")
    assert ds.mask_dir.name == "SegmentationClassAug" and ds.ids == tiny_voc["ids"]
    np.testing.assert_array_equal(ds.tags.argmax(1), [0, 1, 2, 0])
    explicit = VOCDataset(root, "train", mask_dir="SegmentationClass")
    np.testing.assert_array_equal(explicit.load_mask(0), tiny_voc["masks"]["img0"])


def test_missing_root_is_named(tmp_path):
    with pytest.raises(DatasetError, match=r"nowhere: dataset root not found"):
        VOCDataset(tmp_path / "nowhere", "train")


def test_missing_split_lists_available_splits(tiny_voc):
    with pytest.raises(DatasetError) as err:
        VOCDataset(tiny_voc["root"], "test")
    msg = str(err.value)
    assert "ImageSets/Segmentation/test.txt: split file not found" in msg
    assert "train, val" in msg


def test_missing_listed_image_is_named(tiny_voc):
    (tiny_voc["root"] / "JPEGImages" / "img1.png").unlink()
    with pytest.raises(
        DatasetError,
        match=r"train\.txt: 1 listed images are missing from .*JPEGImages \(e\.g\. img1\)",
    ):
        VOCDataset(tiny_voc["root"], "train")


def test_mask_size_mismatch_names_mask_and_image(tiny_voc):
    root = tiny_voc["root"]
    save_palette_png(root / "SegmentationClass" / "img0.png", np.zeros((20, 25), np.uint8))
    np.save(root / "cls_labels.npy", {s: np.ones(3, np.float32) for s in tiny_voc["ids"]})
    ds = VOCDataset(root, "train")
    with pytest.raises(DatasetError) as err:
        ds.load_mask(0)
    assert "SegmentationClass/img0.png" in str(err.value) and "JPEGImages/img0.png" in str(
        err.value
    )


def test_label_id_outside_class_list_is_named(tiny_voc):
    root = tiny_voc["root"]
    mask = tiny_voc["masks"]["img2"].copy()
    mask[1, 1] = 9
    save_palette_png(root / "SegmentationClass" / "img2.png", mask)
    with pytest.raises(
        DatasetError, match=r"img2\.png: label ids \[9\] are outside the class list \(0\.\.3"
    ):
        VOCDataset(root, "train")


def test_grayscale_rgba_and_16bit_images_are_converted(tiny_voc):
    root = tiny_voc["root"]
    Image.fromarray(np.full((20, 24), 50, np.uint8)).save(root / "JPEGImages" / "img0.png")
    rgba = np.dstack([rgb_image(20, 24, 5), np.full((20, 24), 9, np.uint8)])
    Image.fromarray(rgba).save(root / "JPEGImages" / "img1.png")
    Image.fromarray(np.full((20, 24), 257 * 70, np.uint16)).save(root / "JPEGImages" / "img2.png")
    ds = TransformedDataset(VOCDataset(root, "train"), EvalTransform((0, 0, 0), (1, 1, 1)))
    for i, value in ((0, 50 / 255), (2, 70 / 255)):
        item = ds[i]
        assert item["image"].shape == (3, 20, 24)
        assert float(item["image"].min()) == pytest.approx(value) == float(item["image"].max())
    np.testing.assert_allclose(
        ds[1]["image"].permute(1, 2, 0).numpy() * 255, rgb_image(20, 24, 5), atol=1e-3
    )


def test_corrupt_image_surfaces_as_dataset_error(tiny_voc):
    root = tiny_voc["root"]
    (root / "JPEGImages" / "img1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    # Deriving tags reads the masks, which checks them against their images: fails early.
    with pytest.raises(DatasetError, match=r"JPEGImages/img1\.png: cannot read image"):
        VOCDataset(root, "train")
    np.save(root / "cls_labels.npy", {s: np.ones(3, np.float32) for s in tiny_voc["ids"]})
    ds = VOCDataset(root, "train")  # tags from the labels file: the image is read later
    with pytest.raises(DatasetError, match=r"JPEGImages/img1\.png: cannot read image"):
        ds.load_image(1)


def test_untagged_images_skipped_with_one_counted_warning(tiny_voc, caplog):
    ds = VOCDataset(tiny_voc["root"], "val")
    with caplog.at_level(logging.WARNING, logger="dscnet.data"):
        kept = drop_untagged(ds)
    assert kept.ids == ["img0", "img1", "img2"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith("skipped 1 images with no tags in ") and warnings[0].endswith(
        "val.txt"
    )
    np.testing.assert_array_equal(kept.load_mask(2), tiny_voc["masks"]["img2"])


def test_split_without_masks_or_labels_is_for_inference_only(tiny_voc, caplog):
    root = tiny_voc["root"]
    (root / "ImageSets" / "Segmentation" / "test.txt").write_text("img9\n")
    Image.fromarray(rgb_image(6, 7, 9)).save(root / "JPEGImages" / "img9.jpg")
    with caplog.at_level(logging.WARNING, logger="dscnet.data"):
        ds = VOCDataset(root, "test")
    assert not ds.has_masks and ds.load_mask(0) is None and not ds.tags.any()
    assert "their tags are unknown" in caplog.text
    assert ds.load_image(0).shape == (6, 7, 3)
    with pytest.raises(DatasetError, match=r"test\.txt: none of the 1 images has a tag"):
        drop_untagged(ds)
    with pytest.raises(DatasetError, match=r"nolabels\.npy: labels file not found"):
        VOCDataset(root, "train", labels_file="nolabels.npy")
