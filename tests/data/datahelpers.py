"""Helpers for the data tests (imported by conftest.py and the test files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from dscnet.data.palette import voc_palette


def save_palette_png(path: Path, mask: np.ndarray) -> None:
    """Write a uint8 label mask as a VOC-palette PNG (what SegmentationClass holds)."""
    h, w = mask.shape
    img = Image.frombytes("P", (w, h), np.ascontiguousarray(mask, dtype=np.uint8).tobytes())
    img.putpalette(voc_palette().reshape(-1).tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def rgb_image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
