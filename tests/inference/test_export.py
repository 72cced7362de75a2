"""ONNX (dynamic H/W/batch, checked in onnxruntime at another size) and TorchScript export."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dscnet.errors import DscnetError, MissingExtraError
from dscnet.inference import export as export_mod
from dscnet.inference.export import (
    export_onnx,
    export_torchscript,
    verify_onnx,
    verify_torchscript,
)
from dscnet.models.backbones import build_backbone


class BakedSize(nn.Module):
    """Upsamples to a size computed in Python: tracing freezes the example's size."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, stride=2, padding=1)

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        h, w = int(images.shape[2]), int(images.shape[3])
        return F.interpolate(self.conv(images), size=(h, w), mode="bilinear", align_corners=False)


def _run_onnx(path, x: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": x.numpy()})[0]


@pytest.mark.parametrize("exporter", ["auto", "torchscript"])
def test_onnx_matches_pytorch_at_another_size(strided_model, tmp_path, exporter) -> None:
    path = export_onnx(
        strided_model, tmp_path / "m.onnx", example_size=(1, 3, 32, 32), exporter=exporter
    )
    assert path.is_file() and not (tmp_path / "m.onnx.data").exists()
    x = torch.randn(3, 3, 45, 70, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = strided_model.segment(x).numpy()
    actual = _run_onnx(path, x)
    assert actual.shape == (3, 3, 45, 70)
    np.testing.assert_allclose(actual, expected, atol=1e-4, rtol=1e-4)
    assert verify_onnx(strided_model, path, (1, 3, 17, 23)) < 1e-4


class TinyViTSegmenter(nn.Module):
    """A one-block ViT-S/16 backbone + 1x1 classifier, upsampled to the input size."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = build_backbone("vit_small_patch16_224", output_stride=16, depth=1)
        self.classifier = nn.Conv2d(self.backbone.out_channels, 3, 1)

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(self.backbone(images))
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


@pytest.mark.skipif(importlib.util.find_spec("onnxscript") is None, reason="needs onnxscript")
def test_vit_onnx_export_follows_sizes_that_are_not_multiples_of_the_patch(tmp_path) -> None:
    """The token grid is ceil(H/16) x ceil(W/16): 51 x 37 must give a 4 x 3 grid, not 3 x 2.

    A ceil-division written with negative operands exported as floor and failed here.
    """
    model = TinyViTSegmenter().eval()
    path = export_onnx(
        model, tmp_path / "vit.onnx", example_size=(1, 3, 64, 64), exporter="dynamo", check=False
    )
    for size in [(2, 3, 51, 37), (1, 3, 80, 48)]:
        assert verify_onnx(model, path, size) < 1e-3


@pytest.mark.filterwarnings("ignore")
def test_a_graph_that_cannot_run_at_the_check_size_gets_a_clear_error(tmp_path) -> None:
    # Traced at the ViT's native 224 px, the legacy tracer skips the position-embedding
    # resampling and freezes its 14 x 14 grid into the graph.
    model = TinyViTSegmenter().eval()
    with pytest.raises(DscnetError, match=r"fails to run at input size \(2, 3, 51, 37\)"):
        export_onnx(
            model,
            tmp_path / "vit.onnx",
            example_size=(1, 3, 224, 224),
            exporter="torchscript",
            check_size=(2, 3, 51, 37),
        )
    with pytest.raises(DscnetError, match=r"TorchScript model .* fails to run at input size"):
        export_torchscript(
            model, tmp_path / "vit.pt", example_size=(1, 3, 224, 224), check_size=(2, 3, 51, 37)
        )


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_round_trip(strided_model, tmp_path) -> None:
    path = export_torchscript(strided_model, tmp_path / "m.pt", example_size=(1, 3, 32, 32))
    loaded = torch.jit.load(str(path))
    x = torch.randn(2, 3, 27, 41, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), strided_model.segment(x), atol=1e-5, rtol=1e-5)


def test_exports_that_bake_the_example_size_are_caught(tmp_path) -> None:
    model = BakedSize().eval()
    with pytest.raises(DscnetError, match="does not follow the input size"):
        export_torchscript(model, tmp_path / "baked.pt", example_size=(1, 3, 16, 16))
    with pytest.raises(DscnetError, match="does not follow the input size"):
        export_onnx(model, tmp_path / "baked.onnx", example_size=(1, 3, 16, 16), exporter="torchscript")


def test_missing_onnx_names_the_export_extra(strided_model, tmp_path, monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        export_mod.importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a)
    )
    with pytest.raises(MissingExtraError, match=r"dscnet\[export\]") as info:
        export_onnx(strided_model, tmp_path / "m.onnx")
    assert info.value.module == "onnx"
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.filterwarnings("ignore")
def test_vit_torchscript_traced_off_its_native_size_follows_other_sizes(tmp_path) -> None:
    model = TinyViTSegmenter().eval()
    path = export_torchscript(model, tmp_path / "vit.pt", example_size=(1, 3, 64, 64))
    assert verify_torchscript(model, path, (2, 3, 51, 37)) < 1e-3
