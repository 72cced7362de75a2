"""Loading local weight files into backbones: formats, wrappers, naming, errors."""

from __future__ import annotations

import logging

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from dscnet.errors import CheckpointError
from dscnet.models.backbones import SmallCNN, build_backbone, read_state_dict


class NotAllowedInWeightsOnly:
    """An arbitrary class: torch.load(weights_only=True) must refuse to unpickle it."""

    def __init__(self) -> None:
        self.payload = 1


def _reference_net(seed: int = 1) -> SmallCNN:
    torch.manual_seed(seed)
    net = SmallCNN(output_stride=8)
    with torch.no_grad():  # give BN buffers non-default values so they are checked too
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    return net


def _assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], msg=key)


def test_safetensors_round_trip(tmp_path):
    ref = _reference_net()
    path = tmp_path / "small.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    net = build_backbone("small_cnn", pretrained=str(path), output_stride=8)
    _assert_same_state(net, ref)
    report = net.pretrained_report
    assert report.source == str(path) and not report.missing and not report.unexpected
    assert len(report.loaded) == len(ref.state_dict())


def test_pth_with_wrappers_and_ddp_prefix(tmp_path):
    ref = _reference_net()
    path = tmp_path / "small.pth"
    wrapped = {"module." + k: v for k, v in ref.state_dict().items()}
    torch.save({"state_dict": wrapped, "epoch": 3, "meta": {"lr": 0.1}}, path)
    net = build_backbone("small_cnn", pretrained=str(path), output_stride=8)
    _assert_same_state(net, ref)


def test_whole_model_checkpoint_prefix_and_head_keys(tmp_path):
    """A checkpoint of a whole network (backbone.* plus heads) loads its backbone part."""
    ref = _reference_net()
    state = {"backbone." + k: v for k, v in ref.state_dict().items()}
    state["cls_head.weight"] = torch.zeros(8, 192, 1, 1)
    path = tmp_path / "full.pt"
    torch.save({"model": state}, path)
    net = build_backbone("small_cnn", pretrained=str(path), output_stride=8)
    _assert_same_state(net, ref)
    assert net.pretrained_report.ignored == ["cls_head.weight"]


def test_torchvision_resnet18_round_trip(tmp_path):
    """torchvision and timm ResNets share parameter names; the features are identical."""
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path / "resnet18_torchvision.pth"
    torch.save(tv.state_dict(), path)
    net = build_backbone("resnet18", pretrained=str(path), output_stride=32).eval()
    report = net.pretrained_report
    assert sorted(report.ignored) == ["fc.bias", "fc.weight"]
    assert not report.missing and not report.unexpected
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected = nn.Sequential(*list(tv.children())[:-2])(x)  # conv1 .. layer4
        torch.testing.assert_close(net(x), expected, rtol=1e-4, atol=1e-4)


def test_torchvision_resnet50_names_match_timm():
    tv = torchvision.models.resnet50(weights=None).state_dict()
    net = build_backbone("resnet50", output_stride=16)
    timm_state = net.weights_target().state_dict()
    assert set(tv) - {"fc.weight", "fc.bias"} == set(timm_state)
    assert all(tv[k].shape == timm_state[k].shape for k in timm_state)


def test_timm_named_efficientnet_file_loads_without_conversion(tmp_path):
    torch.manual_seed(0)
    ref = build_backbone("efficientnet_lite0", output_stride=16)
    path = tmp_path / "lite0_timm.safetensors"
    save_file({k: v.contiguous() for k, v in ref.weights_target().state_dict().items()}, str(path))
    net = build_backbone("efficientnet_lite0", pretrained=str(path), output_stride=8)
    _assert_same_state(net, ref)


def test_shape_mismatch_names_file_and_tensor(tmp_path):
    torch.manual_seed(0)
    wider = SmallCNN(widths=(32, 64, 128, 256))
    path = tmp_path / "wider.pth"
    torch.save(wider.state_dict(), path)
    with pytest.raises(CheckpointError) as info:
        build_backbone("small_cnn", pretrained=str(path), output_stride=8)
    message = str(info.value)
    assert str(path) in message
    assert "features.6.0.weight: file (256, 128, 3, 3) vs model (192, 128, 3, 3)" in message


def test_missing_keys_are_reported(tmp_path, caplog):
    ref = _reference_net()
    state = ref.state_dict()
    del state["features.7.1.weight"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with caplog.at_level(logging.WARNING):
        net = build_backbone("small_cnn", pretrained=str(path), output_stride=8)
    assert net.pretrained_report.missing == ["features.7.1.weight"]
    assert "features.7.1.weight" in caplog.text and str(path) in caplog.text


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_corrupt_file(tmp_path, suffix):
    path = tmp_path / f"corrupt{suffix}"
    path.write_bytes(b"\x00\x01 definitely not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="cannot read") as info:
        build_backbone("small_cnn", pretrained=str(path), output_stride=8)
    assert str(path) in str(info.value)


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "with_object.pth"
    torch.save(
        {"state_dict": _reference_net().state_dict(), "obj": NotAllowedInWeightsOnly()}, path
    )
    with pytest.raises(CheckpointError, match="weights_only=True") as info:
        read_state_dict(path)
    # Names what was refused; never passes on torch's advice to switch the safety off.
    assert "NotAllowedInWeightsOnly" in str(info.value) and "weights_only=False" not in str(info.value)


def test_missing_unknown_and_unrelated_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        build_backbone("small_cnn", pretrained=str(tmp_path / "nope.pth"), output_stride=8)
    npz = tmp_path / "weights.npz"
    npz.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unknown weights format"):
        build_backbone("small_cnn", pretrained=str(npz), output_stride=8)
    unrelated = tmp_path / "unrelated.pth"
    torch.save({"encoder.layer.weight": torch.zeros(3)}, unrelated)
    with pytest.raises(CheckpointError, match="none of its 1 tensor names"):
        build_backbone("small_cnn", pretrained=str(unrelated), output_stride=8)
    not_weights = tmp_path / "list.pth"
    torch.save([1, 2, 3], not_weights)
    with pytest.raises(CheckpointError, match="no state dict"):
        read_state_dict(not_weights)
