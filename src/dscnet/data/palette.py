"""The PASCAL VOC colour palette for label PNGs (one implementation: ``dscnet.visualize.palette``)."""

from __future__ import annotations

import numpy as np

from dscnet.visualize.palette import VOC_PALETTE, colorize


def voc_palette() -> np.ndarray:
    """The 256-entry VOC palette, uint8 ``[256, 3]`` (read-only; 255 = (224, 224, 192))."""
    return VOC_PALETTE


def colorize_mask(mask: np.ndarray) -> np.ndarray:
    """Map a label mask ``[H, W]`` to RGB ``[H, W, 3]`` with the VOC palette."""
    return colorize(mask)
