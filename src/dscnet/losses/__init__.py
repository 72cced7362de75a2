"""Training losses: L_cls, L_seg, PGCL, SGCL, the cross-stream term and their joint DSCL objective."""

from dscnet.losses.classification import multilabel_soft_margin_loss
from dscnet.losses.cross_stream import CrossStreamContrast
from dscnet.losses.memory import ClassQueueMemory, PrototypeMemory
from dscnet.losses.pgcl import PixelGroupContrast
from dscnet.losses.segmentation import segmentation_loss
from dscnet.losses.sgcl import SemanticGraphContrast

__all__ = [
    "ClassQueueMemory",
    "CrossStreamContrast",
    "PixelGroupContrast",
    "PrototypeMemory",
    "SemanticGraphContrast",
    "multilabel_soft_margin_loss",
    "segmentation_loss",
]
