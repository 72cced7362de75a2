"""Backbones: dense feature extractors from a registry (see docs/BACKBONES.md).

``build_backbone(name, pretrained, output_stride, channels_last)`` returns a module with
``out_channels``, ``output_stride`` and ``is_transformer`` whose forward maps
``[B, 3, H, W]`` to ``[B, out_channels, ceil(H/os), ceil(W/os)]``.
"""

from dscnet.models.backbones.base import Backbone
from dscnet.models.backbones.efficientnet_lite import (
    build_efficientnet_lite_classifier,
    convert_efficientnet_pytorch_state_dict,
    packaged_weights_path,
)
from dscnet.models.backbones.pretrained import LoadReport, load_pretrained, read_state_dict
from dscnet.models.backbones.registry import build_backbone, list_backbones, register_backbone

# Importing these modules registers the built-in backbones.
from dscnet.models.backbones import small_cnn as _small_cnn  # noqa: E402,F401  isort: skip
from dscnet.models.backbones import timm_backbones as _timm_backbones  # noqa: E402,F401  isort: skip
from dscnet.models.backbones import foundation as _foundation  # noqa: E402,F401  isort: skip
from dscnet.models.backbones.small_cnn import SmallCNN  # noqa: E402  isort: skip
from dscnet.models.backbones.timm_backbones import (  # noqa: E402  isort: skip
    register_timm_cnn,
    register_timm_vit,
)

__all__ = [
    "Backbone",
    "LoadReport",
    "SmallCNN",
    "build_backbone",
    "build_efficientnet_lite_classifier",
    "convert_efficientnet_pytorch_state_dict",
    "list_backbones",
    "load_pretrained",
    "packaged_weights_path",
    "read_state_dict",
    "register_backbone",
    "register_timm_cnn",
    "register_timm_vit",
]
