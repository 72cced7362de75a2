"""Visualisation: mask/CAM overlays, example strips, the HTML run report (the VOC palette is
``dscnet.data.palette``: label PNGs are a data format)."""

from dscnet.visualize.overlay import (
    as_rgb_uint8,
    cam_heatmap,
    example_strip,
    make_grid,
    overlay_mask,
    save_grid,
)
from dscnet.visualize.report import read_scalars, write_report

__all__ = [
    "as_rgb_uint8",
    "cam_heatmap",
    "example_strip",
    "make_grid",
    "overlay_mask",
    "read_scalars",
    "save_grid",
    "write_report",
]
