"""Augmentation: crop sizes, ignore padding, image/mask consistency, determinism, collate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dscnet.data.transforms import EvalTransform, TrainTransform, collate_same_size, denormalize

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _coded_pair(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A mask of 4x4 blocks and an image whose red channel is 10 * label (so they can be compared)."""
    rng = np.random.default_rng(3)
    mask = np.kron(rng.integers(0, 6, (h // 4, w // 4)), np.ones((4, 4), dtype=np.int64)).astype(
        np.uint8
    )
    image = np.zeros((h, w, 3), dtype=np.uint8)
    image[..., 0] = mask * 10
    image[..., 1] = np.arange(w, dtype=np.uint8)[None, :]  # column index: reveals flips
    return image, mask


def test_output_shapes_and_dtypes_for_any_scale():
    t = TrainTransform(32, scale_range=(0.5, 2.0), color_jitter=0.2, mean=MEAN, std=STD)
    for seed in range(6):
        img, mask, valid = t(
            _image(40, 50, seed), np.zeros((40, 50), np.uint8), np.random.default_rng(seed)
        )
        assert img.shape == (3, 32, 32) and img.dtype == torch.float32
        assert mask.shape == (32, 32) and mask.dtype == torch.int64
        assert valid.shape == (32, 32) and valid.dtype == torch.bool


def test_padding_is_mean_colour_ignore_and_invalid():
    t = TrainTransform(
        32, scale_range=(1.0, 1.0), hflip=False, mean=MEAN, std=STD, ignore_index=255
    )
    image = _image(10, 12)
    img, mask, valid = t(image, np.ones((10, 12), np.uint8), np.random.default_rng(0))
    assert int(valid.sum()) == 120
    assert (mask[~valid] == 255).all() and (mask[valid] == 1).all()
    assert (img[:, ~valid] == 0).all()  # 0 after normalisation = the mean colour
    ys, xs = torch.nonzero(valid, as_tuple=True)
    block = img[:, ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    expected = (
        torch.from_numpy(image).permute(2, 0, 1).float() / 255 - torch.tensor(MEAN).view(3, 1, 1)
    ) / torch.tensor(STD).view(3, 1, 1)
    torch.testing.assert_close(block, expected)


def test_flip_and_crop_keep_image_and_mask_aligned():
    image, mask = _coded_pair(48, 48)
    t = TrainTransform(32, scale_range=(1.0, 1.0), hflip=True, mean=(0, 0, 0), std=(1, 1, 1))
    flipped = 0
    for seed in range(12):
        img, m, valid = t(image, mask, np.random.default_rng(seed))
        red = torch.round(img[0] * 255).long()
        assert torch.equal(red[valid], m[valid] * 10)
        cols = torch.round(img[1] * 255)
        flipped += int(cols[0, 0] > cols[0, -1])
    assert 0 < flipped < 12  # both orientations occur


def test_rescale_changes_size_before_crop():
    t = TrainTransform(64, scale_range=(2.0, 2.0), hflip=False, mean=(0, 0, 0), std=(1, 1, 1))
    image, mask = _coded_pair(16, 16)
    img, m, valid = t(image, mask, np.random.default_rng(0))
    assert int(valid.sum()) == 32 * 32  # 16 px scaled by 2, padded to 64
    assert set(torch.unique(m[valid]).tolist()) <= set(np.unique(mask).tolist())


def test_same_seed_same_sample_and_generators_accepted():
    t = TrainTransform(24, scale_range=(0.7, 1.4), color_jitter=0.3, mean=MEAN, std=STD)
    image, mask = _image(30, 30), np.zeros((30, 30), np.uint8)
    a = t(image, mask, np.random.default_rng(5))
    b = t(image, mask, np.random.default_rng(5))
    c = t(image, mask, np.random.default_rng(6))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(t(image, mask, g1)[0], t(image, mask, g2)[0])
    assert torch.equal(t(image, mask, 9)[0], t(image, mask, 9)[0])


def test_colour_jitter_changes_colours_only():
    t0 = TrainTransform(16, hflip=False, color_jitter=0.0, mean=(0, 0, 0), std=(1, 1, 1))
    t1 = TrainTransform(16, hflip=False, color_jitter=0.4, mean=(0, 0, 0), std=(1, 1, 1))
    image, mask = _image(16, 16), np.arange(256, dtype=np.uint8).reshape(16, 16) % 7
    a, b = t0(image, mask, np.random.default_rng(2)), t1(image, mask, np.random.default_rng(2))
    assert torch.equal(a[1], b[1]) and not torch.allclose(a[0], b[0])
    torch.testing.assert_close(a[0], torch.from_numpy(image).permute(2, 0, 1).float() / 255)


def test_eval_transform_and_denormalize_round_trip():
    image = _image(7, 9)
    img, mask, valid = EvalTransform(MEAN, STD)(image, np.full((7, 9), 3, np.uint8))
    assert img.shape == (3, 7, 9) and mask.dtype == torch.int64 and valid.all()
    back = denormalize(img[None].double(), MEAN, STD)
    assert back.dtype == torch.float64 and back.shape == (1, 3, 7, 9)
    np.testing.assert_allclose(back[0].permute(1, 2, 0).numpy() * 255, image, atol=1e-3)
    assert denormalize(img, MEAN, STD).shape == (3, 7, 9)


def test_bad_scale_range_is_rejected():
    with pytest.raises(ValueError, match="scale_range"):
        TrainTransform(16, scale_range=(1.5, 1.0))


def test_collate_same_size_never_pads_and_keeps_order():
    t = EvalTransform(MEAN, STD)
    samples = []
    for n, (h, w) in enumerate([(5, 8), (9, 4), (5, 8)]):
        img, mask, valid = t(_image(h, w, n), np.ones((h, w), np.uint8))
        samples.append(
            {"image": img, "tags": torch.ones(3), "mask": mask, "valid": valid, "index": n, "id": f"x{n}"}
        )
    first, second = collate_same_size(samples)
    # One batch per size, in order of first appearance; items keep their order inside it.
    assert first["image"].shape == (2, 3, 5, 8) and first["mask"].shape == (2, 5, 8)
    assert first["id"] == ["x0", "x2"] and first["index"].tolist() == [0, 2]
    assert second["image"].shape == (1, 3, 9, 4) and second["id"] == ["x1"]
    assert torch.equal(first["image"][1], samples[2]["image"]) and bool(first["valid"].all())
    # A dataset that leaves "valid" out gets all-True masks.
    del samples[1]["valid"]
    assert bool(collate_same_size(samples[1:2])[0]["valid"].all())
