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
from dscnet.inference.export import export_onnx, export_torchscript, verify_onnx


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
