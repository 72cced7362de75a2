"""dscnet: weakly-supervised semantic segmentation from image-level tags (DSCNet)."""

__version__ = "0.1.0"
