"""VOC palette, colorize and palette PNGs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dscnet.data.palette import VOC_PALETTE, colorize, save_palette_png, voc_palette


def test_voc_palette_known_entries() -> None:
    assert VOC_PALETTE.shape == (256, 3) and VOC_PALETTE.dtype == np.uint8
    known = {
        0: (0, 0, 0),
        1: (128, 0, 0),
        2: (0, 128, 0),
        3: (128, 128, 0),
        4: (0, 0, 128),
        8: (64, 0, 0),
        15: (192, 128, 128),
        20: (0, 64, 128),
        255: (224, 224, 192),
    }
    for i, rgb in known.items():
        assert tuple(VOC_PALETTE[i]) == rgb, i
    # Entries are distinct, so every class gets its own colour.
    assert len({tuple(c) for c in VOC_PALETTE}) == 256
    np.testing.assert_array_equal(voc_palette(21), VOC_PALETTE[:21])
    assert not VOC_PALETTE.flags.writeable


def test_colorize_numpy_and_torch() -> None:
    mask = np.array([[0, 1], [15, 255]], dtype=np.uint8)
    rgb = colorize(mask)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[1, 0], [192, 128, 128])
    np.testing.assert_array_equal(colorize(torch.from_numpy(mask).long()), rgb)
    with pytest.raises(ValueError, match="0..255"):
        colorize(np.array([[0, 300]]))
    with pytest.raises(TypeError, match="integer"):
        colorize(np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="2-D"):
        colorize(np.zeros((1, 2, 2), np.int64))


def test_save_palette_png_round_trip(tmp_path) -> None:
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 81, size=(37, 53)).astype(np.int64)
    mask[0] = 255
    path = save_palette_png(mask, tmp_path / "sub" / "m.png")
    with Image.open(path) as im:
        assert im.mode == "P" and im.size == (53, 37)
        np.testing.assert_array_equal(np.array(im), mask)  # ids back, not colours
        np.testing.assert_array_equal(np.array(im.convert("RGB")), colorize(mask))
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["m.png"]
