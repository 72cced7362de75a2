"""Backbone registry, output shapes/strides, channels_last and the small CNN."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from dscnet.errors import ConfigError
from dscnet.models.backbones import (
    SmallCNN,
    build_backbone,
    list_backbones,
    register_backbone,
    register_timm_cnn,
)
from dscnet.models.backbones import registry as registry_module

# (name, output_stride, H, W, kwargs): odd sizes on purpose; ViT-B/DeiT-B with one block
# (timm passes `depth` to the model) so that the test stays fast. resnet101 and
# efficientnet_lite1/2 share their code path with resnet50/efficientnet_lite0 (their
# architectures are checked in test_efficientnet_lite.py and by the registry test).
SHAPE_CASES = [
    ("small_cnn", 8, 61, 93, {}),
    ("small_cnn", 16, 64, 64, {}),
    ("resnet18", 8, 50, 77, {}),
    ("resnet18", 16, 50, 77, {}),
    ("resnet18", 32, 50, 77, {}),
    ("resnet50", 8, 33, 40, {}),
    ("efficientnet_lite0", 8, 50, 77, {}),
    ("efficientnet_lite0", 16, 50, 77, {}),
    ("vit_small_patch16_224", 16, 50, 77, {"depth": 2}),
    ("vit_base_patch16_224", 16, 48, 64, {"depth": 1}),
    ("deit_base_patch16_224", 16, 40, 33, {"depth": 1}),
]
EXPECTED_CHANNELS = {
    "small_cnn": 192,
    "resnet18": 512,
    "resnet50": 2048,
    "efficientnet_lite0": 1280,
    "vit_small_patch16_224": 384,
    "vit_base_patch16_224": 768,
    "deit_base_patch16_224": 768,
}


@pytest.mark.parametrize("name,output_stride,h,w,kwargs", SHAPE_CASES)
def test_output_shape_and_stride(name, output_stride, h, w, kwargs):
    torch.manual_seed(0)
    net = build_backbone(name, output_stride=output_stride, **kwargs).eval()
    assert net.output_stride == output_stride
    assert net.out_channels == EXPECTED_CHANNELS[name]
    assert net.is_transformer == name.startswith(("vit", "deit"))
    with torch.no_grad():
        out = net(torch.randn(2, 3, h, w))
    assert out.shape == (
        2,
        net.out_channels,
        math.ceil(h / output_stride),
        math.ceil(w / output_stride),
    )
    assert torch.isfinite(out).all()


def test_all_documented_backbones_registered():
    expected = set(EXPECTED_CHANNELS) | {"resnet101", "efficientnet_lite1", "efficientnet_lite2"}
    assert expected <= set(list_backbones())


def test_unknown_name_lists_registered_backbones():
    with pytest.raises(ConfigError) as info:
        build_backbone("resnet9000")
    message = str(info.value)
    assert "resnet9000" in message
    for name in ("small_cnn", "resnet50", "efficientnet_lite0", "vit_base_patch16_224"):
        assert name in message


@pytest.mark.parametrize(
    "name,output_stride", [("vit_small_patch16_224", 8), ("small_cnn", 32), ("resnet18", 4)]
)
def test_unsupported_output_stride(name, output_stride):
    with pytest.raises(ConfigError, match="output_stride"):
        build_backbone(name, output_stride=output_stride, depth=1) if name.startswith(
            "vit"
        ) else build_backbone(name, output_stride=output_stride)


def test_pretrained_options_that_do_not_apply():
    with pytest.raises(ConfigError, match="packaged weights"):
        build_backbone("resnet18", pretrained="package")
    with pytest.raises(ConfigError, match="no timm weights"):
        build_backbone("small_cnn", pretrained="timm", output_stride=8)


@pytest.mark.parametrize(
    "name,output_stride,timm_name",
    [
        ("resnet18", 16, "resnet18"),
        ("efficientnet_lite0", 8, "tf_efficientnet_lite0"),
        ("vit_small_patch16_224", 16, "vit_small_patch16_224"),
    ],
)
def test_timm_pretrained_passes_flag(monkeypatch, name, output_stride, timm_name):
    """``pretrained="timm"`` asks timm for its weights (never downloaded in tests)."""
    calls = []
    real = timm.create_model

    def fake(model_name, pretrained=False, **kwargs):
        calls.append((model_name, pretrained, kwargs))
        return real(model_name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", fake)
    extra = {"depth": 1} if name.startswith("vit") else {}
    build_backbone(name, pretrained="timm", output_stride=output_stride, **extra)
    assert len(calls) == 1
    model_name, pretrained, kwargs = calls[0]
    assert model_name == timm_name and pretrained is True
    if name.startswith("vit"):
        assert kwargs["dynamic_img_size"] is True
    else:
        assert kwargs["output_stride"] == output_stride
    calls.clear()
    build_backbone(name, pretrained=None, output_stride=output_stride, **extra)
    assert calls[0][1] is False


def test_register_custom_backbone(monkeypatch):
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))

    class Tiny(nn.Module):
        is_transformer = False

        def __init__(self, output_stride):
            super().__init__()
            self.output_stride = output_stride
            self.out_channels = 5
            self.conv = nn.Conv2d(3, 5, 3, stride=output_stride, padding=1)

        def forward(self, x):
            return self.conv(x)

    @register_backbone("tiny_test_net")
    def tiny(*, output_stride, pretrained, scale=1):
        assert pretrained is None  # "none" from a config is normalised to None
        return Tiny(output_stride)

    net = build_backbone("tiny_test_net", pretrained="none", output_stride=8, scale=2)
    assert net(torch.zeros(1, 3, 32, 40)).shape == (1, 5, 4, 5)
    assert "tiny_test_net" in list_backbones()
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("tiny_test_net")(tiny)

    @register_backbone("broken_test_net")
    def broken(*, output_stride, pretrained):
        return nn.Identity()

    with pytest.raises(TypeError, match="out_channels"):
        build_backbone("broken_test_net")


def test_register_timm_cnn_pads_floor_stems(monkeypatch):
    """ConvNeXt's 4x4 patchify stem floors odd sizes; the registered backbone pads to the
    stride, so the map still has ceil(H/os) x ceil(W/os) cells."""
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))
    register_timm_cnn("test_convnext_atto", "convnext_atto")
    net = build_backbone("test_convnext_atto", output_stride=8).eval()
    x = torch.randn(1, 3, 50, 77)
    with torch.no_grad():
        out = net(x)
        assert out.shape == (1, 320, 7, 10)
        torch.testing.assert_close(out, net(F.pad(x, (0, 3, 0, 6))))


@pytest.mark.parametrize("name", ["small_cnn", "efficientnet_lite0"])
def test_channels_last_same_output(name):
    torch.manual_seed(0)
    reference = build_backbone(name, output_stride=16).eval()
    fast = build_backbone(name, output_stride=16, channels_last=True).eval()
    fast.load_state_dict(reference.state_dict())
    assert fast.channels_last and not reference.channels_last
    convs = [m.weight for m in fast.modules() if isinstance(m, nn.Conv2d)]
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    x = torch.randn(2, 3, 48, 56)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), reference(x), rtol=1e-4, atol=1e-4)


def test_vit_pads_bottom_right_like_zero_padding():
    """A 50x77 input gives the same map as the same input zero-padded to 64x80 by hand."""
    torch.manual_seed(0)
    net = build_backbone("vit_small_patch16_224", output_stride=16, depth=2).eval()
    x = torch.randn(1, 3, 50, 77)
    with torch.no_grad():
        auto = net(x)
        manual = net(F.pad(x, (0, 3, 0, 14)))
    assert auto.shape == manual.shape == (1, 384, 4, 5)
    torch.testing.assert_close(auto, manual)


def test_small_cnn_size_and_receptive_field():
    net = SmallCNN(output_stride=8)
    params = sum(p.numel() for p in net.parameters())
    assert 300_000 <= params <= 1_000_000
    # 1 + 2*(1 + 2 + 2*2 + 4 + 4*4 + 8) + 2*8*(2 + 4) = 139 (see the module docstring)
    assert net.receptive_field() == 139
    assert SmallCNN(output_stride=16).receptive_field() >= 100


def test_small_cnn_sees_whole_objects():
    """The centre cell's gradient reaches input pixels more than 30 px away on each side."""
    torch.manual_seed(0)
    net = SmallCNN(output_stride=8).eval()
    x = torch.randn(1, 3, 160, 160, requires_grad=True)
    out = net(x)
    out[0, :, 10, 10].sum().backward()
    cols = x.grad.abs().sum(dim=(0, 1, 2)).nonzero().flatten()
    rows = x.grad.abs().sum(dim=(0, 1, 3)).nonzero().flatten()
    centre = 10 * 8 + 4
    for idx in (rows, cols):
        assert idx.min() <= centre - 30 and idx.max() >= centre + 30
    assert int(cols.max() - cols.min()) + 1 <= net.receptive_field()


def test_small_cnn_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = build_backbone("small_cnn", output_stride=8)
    net(torch.randn(2, 3, 64, 64)).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
