"""Heads on the backbone features: CAM classifier, segmentation decoder, PGCL projection,
SGCL semantic graph."""

from dscnet.models.heads.classifier import ClassifierHead
from dscnet.models.heads.projection import ProjectionHead
from dscnet.models.heads.segmentation import FPNHead, SegmentationHead
from dscnet.models.heads.semantic_graph import SemanticGraph

__all__ = ["ClassifierHead", "FPNHead", "ProjectionHead", "SegmentationHead", "SemanticGraph"]
