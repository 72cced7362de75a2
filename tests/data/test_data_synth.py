"""The synthetic benchmark: determinism, ground truth consistency, and its failure modes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dscnet.config import load_config
from dscnet.data.base import tags_from_mask
from dscnet.data.synth import (
    SyntheticDataset,
    SynthSpec,
    generate_sample,
    home_background,
    preview_grid,
    write_synthetic_voc,
)
from dscnet.data.synth_draw import PHOTOS, TEXTURES, grey_bank, photo_bank
from dscnet.data.voc import VOCDataset
from dscnet.errors import ConfigError, DatasetError, MissingExtraError

SMALL = SynthSpec(num_train=24, num_val=12, image_size=64)


def test_same_seed_same_arrays_different_seed_differs():
    a = SyntheticDataset(SMALL, "train")
    b = SyntheticDataset(SMALL, "train")
    np.testing.assert_array_equal(a._images, b._images)
    np.testing.assert_array_equal(a._masks, b._masks)
    np.testing.assert_array_equal(a.tags, b.tags)
    c = SyntheticDataset(SynthSpec(num_train=24, num_val=12, image_size=64, seed=1), "train")
    assert not np.array_equal(a._images, c._images)
    # Splits are different streams.
    v = SyntheticDataset(SMALL, "val")
    assert not np.array_equal(a._images[:12], v._images)


def test_any_image_regenerates_alone_and_uncached_matches():
    ds = SyntheticDataset(SMALL, "train")
    lazy = SyntheticDataset(SMALL, "train", cache=False)
    for i in (0, 7, 23):
        sample = generate_sample(SMALL, "train", i)
        np.testing.assert_array_equal(sample.image, ds.load_image(i))
        np.testing.assert_array_equal(sample.mask, ds.load_mask(i))
        np.testing.assert_array_equal(lazy.load_image(i), ds.load_image(i))
    np.testing.assert_array_equal(lazy.tags, ds.tags)


def test_identical_in_another_process():
    # Per-image seeds must not depend on anything process-specific (e.g. salted str hashes).
    code = (
        "import hashlib; from dscnet.data.synth import SynthSpec, generate_sample;"
        "s = generate_sample(SynthSpec(image_size=64), 'val', 5);"
        "print(hashlib.sha256(s.image.tobytes() + s.mask.tobytes()).hexdigest())"
    )
    src = str(Path(__file__).resolve().parents[2] / "src")
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": src, "PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin"},
    ).stdout.strip()
    import hashlib

    s = generate_sample(SynthSpec(image_size=64), "val", 5)
    assert out == hashlib.sha256(s.image.tobytes() + s.mask.tobytes()).hexdigest()


def test_tags_and_classes_match_masks():
    spec = SynthSpec(num_train=60, num_val=1, image_size=64)
    ds = SyntheticDataset(spec, "train")
    assert ds.class_names[0] == "background" and len(ds.class_names) == 9
    assert ds.tags.dtype == np.uint8 and ds.tags.shape == (60, 8)
    for i in range(len(ds)):
        mask = ds.load_mask(i)
        assert mask.dtype == np.uint8 and mask.shape == (64, 64)
        assert set(np.unique(mask)) <= set(range(9))
        np.testing.assert_array_equal(ds.tags[i], tags_from_mask(mask, 8))
        img = ds.load_image(i)
        assert img.dtype == np.uint8 and img.shape == (64, 64, 3)
    # Every class occurs, and multi-label images exist.
    assert ds.tags.sum(0).min() > 0 and (ds.tags.sum(1) >= 2).any()


def test_scene_composition_follows_the_knobs():
    spec = SynthSpec(num_val=80, image_size=64, min_objects=2, max_objects=3, clutter=2)
    metas = [generate_sample(spec, "val", i).meta for i in range(80)]
    n_obj = [len(m["objects"]) for m in metas]
    assert min(n_obj) == 2 and max(n_obj) == 3
    n_dis = [m["num_distractors"] for m in metas]
    assert min(n_dis) == 0 and max(n_dis) == 2
    # Several instances of one class occur.
    assert any(len({o["label"] for o in m["objects"]}) < len(m["objects"]) for m in metas)
    radii = [o["radius"] / 64 for m in metas for o in m["objects"]]
    assert 0.14 <= min(radii) and max(radii) <= 0.28 and max(radii) - min(radii) > 0.08


def _part_body_colours(spec: SynthSpec, split: str, n: int):
    parts, bodies, labels = [], [], []
    for i in range(n):
        s = generate_sample(spec, split, i)
        for c in np.unique(s.mask):
            if c == 0:
                continue
            part = s.parts == c
            body = (s.mask == c) & ~part
            if part.sum() >= 3 and body.sum() >= 20:
                parts.append(s.image[part].mean(0))
                bodies.append(s.image[body].mean(0))
                labels.append(c)
    return np.array(parts), np.array(bodies), np.array(labels)


def _nearest_centroid_accuracy(x_tr, y_tr, x_te, y_te) -> float:
    classes = np.unique(y_tr)
    cent = np.stack([x_tr[y_tr == c].mean(0) for c in classes])
    pred = classes[np.argmin(((x_te[:, None] - cent[None]) ** 2).sum(-1), axis=1)]
    return float((pred == y_te).mean())


def test_part_is_small_inside_body_and_discriminative_body_colour_is_not():
    spec = SynthSpec(image_size=80, num_train=120, num_val=60)
    part_px = class_px = 0
    for i in range(40):
        s = generate_sample(spec, "val", i)
        # Part pixels are labelled with their own class in the ground truth.
        labelled = s.parts > 0
        np.testing.assert_array_equal(s.mask[labelled], s.parts[labelled])
        part_px += int(labelled.sum())
        class_px += int((s.mask > 0).sum())
    # part_scale 0.35 -> the part covers about a tenth of the object.
    assert 0.04 < part_px / class_px < 0.25
    p_tr, b_tr, y_tr = _part_body_colours(spec, "train", 120)
    p_te, b_te, y_te = _part_body_colours(spec, "val", 60)
    assert _nearest_centroid_accuracy(p_tr, y_tr, p_te, y_te) > 0.95
    assert _nearest_centroid_accuracy(b_tr, y_tr, b_te, y_te) < 0.7


def test_part_scale_knob_scales_the_part():
    small = SynthSpec(image_size=80, part_scale=0.2)
    big = SynthSpec(image_size=80, part_scale=0.5)

    def frac(spec):
        samples = [generate_sample(spec, "val", i) for i in range(20)]
        return sum((s.parts > 0).sum() for s in samples) / sum((s.mask > 0).sum() for s in samples)

    assert frac(big) > 3 * frac(small)


@pytest.mark.parametrize("cooc", [0.0, 0.8, 1.0])
def test_cooccurrence_statistic_matches_the_knob(cooc):
    spec = SynthSpec(image_size=48, num_val=200, cooccurrence=cooc, clutter=0)
    metas = [generate_sample(spec, "val", i).meta for i in range(200)]
    on_home = np.array(
        [m["background"] in {home_background(o["label"] - 1) for o in m["objects"]} for m in metas]
    )
    n_bg = len(TEXTURES)
    # P(background is the home of a present class) = cooc + (1 - cooc) * P(random pick is one).
    chance = np.mean([len({o["label"] for o in m["objects"]}) / n_bg for m in metas])
    expected = cooc + (1 - cooc) * chance
    if cooc == 1.0:
        assert on_home.all()
    else:
        assert abs(on_home.mean() - expected) < 0.08
    # Single-class images: the knob read off directly, as a CAM would see it.
    single = [m for m in metas if len({o["label"] for o in m["objects"]}) == 1]
    rate = np.mean(
        [m["background"] == home_background(m["objects"][0]["label"] - 1) for m in single]
    )
    assert abs(rate - (cooc + (1 - cooc) / n_bg)) < 0.12


def test_spec_validation_and_split_names():
    with pytest.raises(ConfigError, match=r"data.synth.num_classes=11: must be <= 10"):
        SynthSpec(num_classes=11)
    with pytest.raises(ConfigError, match="data.synth.min_objects=3: must not exceed data.synth.max_objects"):
        SynthSpec(min_objects=3, max_objects=2)
    with pytest.raises(ConfigError, match=r"data.synth.cooccurrence=1.5: must be <= 1"):
        SynthSpec(cooccurrence=1.5)
    with pytest.raises(ConfigError, match=r"data.synth.object_scale=\(0.3, 0.2\): must be \[low, high\]"):
        SynthSpec(object_scale=(0.3, 0.2))
    # The same ranges refuse the config at load time (one schema for both).
    with pytest.raises(ConfigError, match="data.synth.image_size=16: must be >= 32"):
        load_config("synth_cpu", ["data.synth.image_size=16"])
    with pytest.raises(DatasetError, match=r"no split 'test' \(available splits: train, val\)"):
        SyntheticDataset(SMALL, "test")


def test_from_config_reads_the_section():
    from omegaconf import OmegaConf

    node = OmegaConf.create(
        {
            "num_classes": 6,
            "image_size": 96,
            "cooccurrence": 0.5,
            "object_scale": [0.1, 0.2],
            "x": 1,
        }
    )
    spec = SynthSpec.from_config(node, photo_backgrounds=True)
    assert (spec.num_classes, spec.image_size, spec.cooccurrence) == (6, 96, 0.5)
    assert spec.object_scale == (0.1, 0.2) and hash(spec)
    assert spec.photo_backgrounds and spec.num_train == 2000


def test_photo_backgrounds_are_photos_and_deterministic():
    spec = SynthSpec(image_size=64, num_val=6, photo_backgrounds=True, cooccurrence=1.0)
    a = SyntheticDataset(spec, "val")
    b = SyntheticDataset(spec, "val")
    np.testing.assert_array_equal(a._images, b._images)
    flat = SyntheticDataset(SynthSpec(image_size=64, num_val=6, cooccurrence=1.0), "val")
    assert not np.array_equal(a._images, flat._images)
    assert spec.backgrounds == PHOTOS
    for i in range(6):
        meta = a.sample(i).meta
        assert meta["background_name"] in PHOTOS
        assert meta["background"] in {o["label"] - 1 for o in meta["objects"]}
    # Photographs have far richer local statistics than flat fills: many distinct colours.
    assert len(np.unique(a._images[0].reshape(-1, 3), axis=0)) > 1000


def test_photo_mode_without_scikit_image_names_the_extra(monkeypatch):
    photo_bank.cache_clear()
    grey_bank.cache_clear()
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    try:
        with pytest.raises(MissingExtraError, match=r"pip install 'dscnet\[pretrained\]'"):
            generate_sample(SynthSpec(image_size=48, photo_backgrounds=True), "val", 0)
    finally:
        photo_bank.cache_clear()
        grey_bank.cache_clear()


def test_write_voc_then_read_back_identical(tmp_path):
    spec = SynthSpec(num_train=10, num_val=5, image_size=48)
    root = write_synthetic_voc(tmp_path / "synth", spec)
    labels = np.load(root / "cls_labels.npy", allow_pickle=True).item()
    assert labels["train_00003"].dtype == np.float32 and labels["train_00003"].shape == (8,)
    assert (root / "classes.txt").read_text().splitlines()[0] == "background"
    for split in ("train", "val"):
        mem = SyntheticDataset(spec, split)
        disk = VOCDataset(root, split)
        assert disk.ids == mem.ids and disk.class_names == mem.class_names
        assert disk.has_masks
        np.testing.assert_array_equal(disk.tags, mem.tags)
        for i in range(len(mem)):
            np.testing.assert_array_equal(disk.load_image(i), mem.load_image(i))
            np.testing.assert_array_equal(disk.load_mask(i), mem.load_mask(i))
        # Masks are palette PNGs, as in VOC.
        assert Image.open(root / "SegmentationClass" / f"{mem.ids[0]}.png").mode == "P"


def test_preview_grid_writes_image_and_mask_tiles(tmp_path):
    ds = SyntheticDataset(SMALL, "val")
    out = preview_grid(ds, 6, tmp_path / "grid.png", columns=3, tile=64)
    img = np.asarray(Image.open(out).convert("RGB"))
    # 3 columns x (2 tiles + gaps), 2 rows x (tile + caption + gap).
    assert img.shape == (2 * (64 + 14 + 4) + 4, 3 * (2 * 64 + 4 + 8), 3)
    # The first image tile is the first image, resized to the tile (here 64 -> 64: exact).
    np.testing.assert_array_equal(img[4 : 4 + 64, 4 : 4 + 64], ds.load_image(0))
