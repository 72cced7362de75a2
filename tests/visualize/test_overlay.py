"""Mask overlays, CAM heatmaps, example strips and grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dscnet.data.palette import VOC_PALETTE
from dscnet.visualize import (
    as_rgb_uint8,
    cam_heatmap,
    example_strip,
    make_grid,
    overlay_mask,
    save_grid,
)

NAMES = ["background", "cat", "dog", "person"]


def test_as_rgb_uint8_layouts() -> None:
    chw = torch.full((3, 4, 5), 0.5)
    np.testing.assert_array_equal(as_rgb_uint8(chw), np.full((4, 5, 3), 128, np.uint8))
    gray = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert as_rgb_uint8(gray).shape == (2, 3, 3)
    assert as_rgb_uint8(np.zeros((2, 3, 4), np.uint8)).shape == (2, 3, 3)  # RGBA -> RGB
    with pytest.raises(ValueError, match="image must be"):
        as_rgb_uint8(np.zeros((2, 3, 5)))


def test_overlay_mask_blends_foreground_only() -> None:
    image = np.full((2, 2, 3), 100, np.uint8)
    mask = np.array([[0, 1], [15, 255]])
    out = overlay_mask(image, mask, alpha=0.5)
    np.testing.assert_array_equal(out[0, 0], [100, 100, 100])  # background untouched
    np.testing.assert_array_equal(out[0, 1], [114, 50, 50])  # (100 + 128) / 2, 100 / 2
    np.testing.assert_array_equal(out[1, 0], [146, 114, 114])
    np.testing.assert_array_equal(overlay_mask(image, mask, alpha=1.0)[1, 1], VOC_PALETTE[255])
    with pytest.raises(ValueError, match="does not match image size"):
        overlay_mask(image, np.zeros((3, 2), np.int64))


def test_cam_heatmap_colours_and_resizing() -> None:
    image = np.zeros((8, 8, 3), np.uint8)
    cam = np.zeros((4, 4), np.float32)
    cam[:2, :2] = 1.0
    out = cam_heatmap(image, cam, alpha=1.0)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    # jet: 0 is dark blue, 1 is dark red.
    assert out[7, 7, 2] > 100 and out[7, 7, 0] == 0
    assert out[0, 0, 0] > 100 and out[0, 0, 2] == 0
    # Alpha 0 gives the image back; values outside [0, 1] and NaN are clipped, not crashing.
    np.testing.assert_array_equal(cam_heatmap(image, cam, alpha=0.0), image)
    assert cam_heatmap(image, np.full((8, 8), np.nan)).shape == (8, 8, 3)
    with pytest.raises(ValueError, match="2-D"):
        cam_heatmap(image, np.zeros((1, 4, 4)))


def _example(rng: np.random.Generator):
    image = rng.integers(0, 255, size=(48, 64, 3), dtype=np.uint8)
    truth = np.zeros((48, 64), np.uint8)
    truth[10:30, 10:30] = 1
    truth[5:20, 40:60] = 3
    cams = rng.random((3, 12, 16)).astype(np.float32) * 5.0
    return image, cams, truth


def test_example_strip_panels_and_layout() -> None:
    rng = np.random.default_rng(0)
    image, cams, truth = _example(rng)
    tags = np.array([1, 0, 1], np.float32)
    strip = example_strip(image, cams, tags, truth, truth, truth, NAMES, panel_height=96)
    assert strip.dtype == np.uint8 and strip.ndim == 3 and strip.shape[2] == 3
    # 6 panels (image, 2 CAMs, pseudo, pred, truth) of width 128 at height 96, 4 px gaps.
    assert strip.shape[1] == 6 * 128 + 5 * 4
    bar = strip.shape[0] - 96
    assert 2 * 10 <= bar <= 2 * 30  # caption + legend bars
    # The truth panel (last) holds exactly the palette colours of its classes.
    truth_panel = strip[bar // 2 : bar // 2 + 96, -128:]
    colours = {tuple(c) for c in truth_panel.reshape(-1, 3)}
    assert colours == {tuple(VOC_PALETTE[i]) for i in (0, 1, 3)}

    # More tags than max_cam_panels -> one max panel; a title adds a line.
    many = example_strip(
        image,
        cams,
        np.ones(3),
        None,
        truth,
        None,
        NAMES,
        panel_height=96,
        max_cam_panels=2,
        title="id 7",
    )
    assert many.shape[1] == 5 * 128 + 4 * 4 and many.shape[0] > strip.shape[0]
    # No CAMs / no tags still give aligned strips.
    none = example_strip(image, None, None, None, None, None, NAMES, panel_height=96)
    assert none.shape[1] == many.shape[1]
    with pytest.raises(ValueError, match="C = len"):
        example_strip(image, cams, np.ones(2), None, None, None, NAMES)


def test_grid_pads_and_saves(tmp_path) -> None:
    a = np.zeros((10, 20, 3), np.uint8)
    b = np.zeros((5, 30, 3), np.uint8)
    grid = make_grid([a, b], gap=2)
    assert grid.shape == (17, 30, 3)
    assert (grid[:10, 20:] == 255).all() and (grid[10:12] == 255).all()
    path = save_grid([a, b], tmp_path / "g.png", gap=2)
    with Image.open(path) as im:
        assert im.size == (30, 17)
    with pytest.raises(ValueError, match="at least one"):
        make_grid([])
