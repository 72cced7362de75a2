"""Visualisation: VOC palette, mask/CAM overlays, example strips, the HTML run report."""

from dscnet.visualize.overlay import (
    as_rgb_uint8,
    cam_heatmap,
    example_strip,
    make_grid,
    overlay_mask,
    save_grid,
)
from dscnet.visualize.palette import VOC_PALETTE, colorize, save_palette_png, voc_palette
from dscnet.visualize.report import read_scalars, write_report

__all__ = [
    "VOC_PALETTE",
    "as_rgb_uint8",
    "cam_heatmap",
    "colorize",
    "example_strip",
    "make_grid",
    "overlay_mask",
    "read_scalars",
    "save_grid",
    "save_palette_png",
    "voc_palette",
    "write_report",
]
