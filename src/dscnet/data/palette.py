"""The PASCAL VOC colour palette and palette-PNG writing.

The palette is the one of the VOC devkit (``labelcolormap.m``): the bits of the class id are
spread over the high bits of R, G and B, so id 0 is black, 1 dark red, 15 (person) pink and
255 (ignore) cream. Masks saved as mode-"P" PNGs with this palette open in any viewer as
colour images and read back (``np.array(Image.open(p))``) as class ids: the format VOC uses
for ``SegmentationClass`` and second-stage segmenters expect for pseudo labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dscnet.utils.io import atomic_write


def voc_palette(n: int = 256) -> np.ndarray:
    """The first ``n`` VOC colours as a uint8 ``[n, 3]`` array."""
    ids = np.arange(n, dtype=np.int64)
    cmap = np.zeros((n, 3), dtype=np.int64)
    for j in range(8):  # 8 bit planes; vectorised over all ids
        shift = 7 - j
        for ch in range(3):
            cmap[:, ch] |= ((ids >> (3 * j + ch)) & 1) << shift
    return cmap.astype(np.uint8)


VOC_PALETTE: np.ndarray = voc_palette(256)
VOC_PALETTE.setflags(write=False)


def _as_index_mask(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D [H, W] class ids, got shape {mask.shape}")
    if not np.issubdtype(mask.dtype, np.integer):
        raise TypeError(f"mask must hold integer class ids, got dtype {mask.dtype}")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError(
            f"mask values must be in 0..255 for a palette image, got {mask.min()}..{mask.max()}"
        )
    return mask.astype(np.uint8, copy=False)


def colorize(mask: np.ndarray | torch.Tensor, palette: np.ndarray = VOC_PALETTE) -> np.ndarray:
    """Class-id mask ``[H, W]`` -> RGB uint8 ``[H, W, 3]`` (255 = ignore gets the VOC cream)."""
    return np.asarray(palette, dtype=np.uint8)[_as_index_mask(mask)]


def save_palette_png(mask: np.ndarray | torch.Tensor, path: str | Path) -> Path:
    """Save a class-id mask as a VOC palette PNG (mode "P"), atomically; returns the path."""
    # An "L" image given a palette becomes mode "P" with the ids untouched (no quantisation).
    img = Image.fromarray(np.ascontiguousarray(_as_index_mask(mask)))
    img.putpalette(VOC_PALETTE.reshape(-1).tolist())
    return atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))
