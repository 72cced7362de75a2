"""CAMs, pixel-adaptive refinement (PAR) and the pseudo labeller (docs/METHOD.md §1)."""

from dscnet.cam.cams import cam_maps, cams_from_logits
from dscnet.cam.labeler import PseudoLabeler, Thresholds, build_pseudo_labeler, decide
from dscnet.cam.par import PAR

__all__ = [
    "PAR",
    "PseudoLabeler",
    "Thresholds",
    "build_pseudo_labeler",
    "cam_maps",
    "cams_from_logits",
    "decide",
]
