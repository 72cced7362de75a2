"""CAMs, pixel-adaptive refinement (PAR) and online pseudo labels (METHOD.md §1)."""

from dscnet.cam.cams import cams_from_logits, cams_with_background
from dscnet.cam.par import PAR
from dscnet.cam.pseudo_labels import make_pseudo_labels

__all__ = ["PAR", "cams_from_logits", "cams_with_background", "make_pseudo_labels"]
