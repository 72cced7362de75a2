"""The PASCAL VOC colour palette, used to write and read label PNGs."""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=1)
def voc_palette() -> np.ndarray:
    """Return the 256-entry PASCAL VOC palette as uint8 ``[256, 3]`` (index 255 = (224,224,192)).

    This is the bit-interleaving palette of the VOC devkit (``labelcolormap``), so label PNGs
    written with it look exactly like the official ``SegmentationClass`` files.
    """
    palette = np.zeros((256, 3), dtype=np.uint8)
    for label in range(256):
        r = g = b = 0
        cid = label
        for shift in range(7, -1, -1):
            r |= ((cid >> 0) & 1) << shift
            g |= ((cid >> 1) & 1) << shift
            b |= ((cid >> 2) & 1) << shift
            cid >>= 3
        palette[label] = (r, g, b)
    palette.setflags(write=False)
    return palette


def colorize_mask(mask: np.ndarray) -> np.ndarray:
    """Map a uint8 label mask ``[H, W]`` to an RGB image ``[H, W, 3]`` with the VOC palette."""
    return voc_palette()[np.asarray(mask, dtype=np.uint8)]
