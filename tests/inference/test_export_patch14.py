"""ONNX export of a DSCNet model on a patch-14 ViT (DINOv2): dynamic sizes off the patch grid."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from dscnet.inference.export import export_onnx, verify_onnx
from dscnet.models.backbones import build_backbone
from dscnet.models.dscnet import DSCNetModel


@pytest.mark.skipif(importlib.util.find_spec("onnxscript") is None, reason="needs onnxscript")
def test_patch14_model_exports_and_follows_other_sizes(tmp_path):
    torch.manual_seed(0)
    backbone = build_backbone("vit_small_patch14_reg4_dinov2", output_stride=14, depth=1)
    model = DSCNetModel(backbone, num_classes=3, pooling="gmp", seg_hidden=16).eval()
    path = export_onnx(
        model, tmp_path / "dinov2.onnx", example_size=(1, 3, 56, 56), exporter="dynamo", check=False
    )
    # 51 x 37 -> a 4 x 3 token grid (ceil), 80 x 48 -> 6 x 4: neither is a multiple of 14.
    for size in [(2, 3, 51, 37), (1, 3, 80, 48)]:
        assert verify_onnx(model, path, size) < 1e-3
