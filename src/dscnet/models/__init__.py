"""Networks: backbones, heads and the assembled DSCNet model."""
