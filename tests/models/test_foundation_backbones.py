"""DINOv2 (patch 14) and CLIP ViT-B/16 backbones: shapes at any size, timm and local weights.

Everything at random init with one or two blocks (timm passes ``depth``); nothing downloaded.
"""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from dscnet.config import load_config
from dscnet.errors import CheckpointError, ConfigError
from dscnet.models.backbones import build_backbone
from dscnet.models.backbones.foundation import FOUNDATION_VITS

CASES = [  # (name, patch, channels)
    ("vit_small_patch14_dinov2", 14, 384),
    ("vit_base_patch14_dinov2", 14, 768),
    ("vit_small_patch14_reg4_dinov2", 14, 384),
    ("vit_base_patch14_reg4_dinov2", 14, 768),
    ("vit_base_patch16_clip_224", 16, 768),
]


@pytest.mark.parametrize("name,patch,channels", CASES)
def test_dense_features_at_sizes_off_the_patch_grid(name, patch, channels):
    torch.manual_seed(0)
    net = build_backbone(name, output_stride=patch, depth=1).eval()
    assert (net.output_stride, net.out_channels, net.is_transformer) == (patch, channels, True)
    for h, w in [(47, 61), (448, 448)]:
        with torch.no_grad():
            out = net(torch.randn(1, 3, h, w))
        assert out.shape == (1, channels, math.ceil(h / patch), math.ceil(w / patch))
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["vit_small_patch14_dinov2", "vit_small_patch14_reg4_dinov2"])
def test_patch14_grid_pads_bottom_right_like_zero_padding(name):
    torch.manual_seed(0)
    net = build_backbone(name, output_stride=14, depth=2).eval()
    x = torch.randn(1, 3, 47, 61)  # -> 56 x 70, a 4 x 5 grid; register tokens are dropped
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(F.pad(x, (0, 9, 0, 9))))


def test_patch14_rejects_another_output_stride():
    with pytest.raises(ConfigError, match=r"supports only model.output_stride=14 \(its patch size\), got 16"):
        build_backbone("vit_small_patch14_dinov2", output_stride=16, depth=1)


def test_clip_normalisation_comes_from_timm():
    net = build_backbone("vit_base_patch16_clip_224", output_stride=16, depth=1)
    assert net.input_mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    cfg = load_config("voc_clip")
    assert tuple(cfg.data.mean) == pytest.approx(net.input_mean)
    assert tuple(cfg.data.std) == pytest.approx(net.input_std)


@pytest.mark.parametrize("name", list(FOUNDATION_VITS))
def test_pretrained_timm_asks_for_the_tagged_weights(monkeypatch, name):
    calls = []
    real = timm.create_model

    def fake(model_name, pretrained=False, **kwargs):
        calls.append((model_name, pretrained))
        return real(model_name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", fake)
    build_backbone(name, pretrained="timm", output_stride=14 if "patch14" in name else 16, depth=1)
    assert calls == [(FOUNDATION_VITS[name], True)]
    assert FOUNDATION_VITS[name].split(".")[1] in ("lvd142m", "openai")


def _weights(net) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.body.state_dict().items()}


def test_local_file_in_timm_names(tmp_path):
    torch.manual_seed(1)
    source = build_backbone("vit_small_patch14_dinov2", output_stride=14, depth=1)
    save_file(_weights(source), tmp_path / "dinov2.safetensors")
    torch.manual_seed(2)
    net = build_backbone(
        "vit_small_patch14_dinov2", pretrained=str(tmp_path / "dinov2.safetensors"), output_stride=14, depth=1
    )
    for key, value in _weights(source).items():
        torch.testing.assert_close(net.body.state_dict()[key], value)
    assert not net.pretrained_report.missing


def test_local_file_in_dinov2s_own_layout(tmp_path):
    """The official release has a mask_token and, with registers, `register_tokens` and the
    class token's position inside pos_embed; timm's converter maps them."""
    torch.manual_seed(1)
    source = build_backbone("vit_small_patch14_reg4_dinov2", output_stride=14, depth=1)
    timm_sd = _weights(source)
    official = {k: v for k, v in timm_sd.items() if k not in ("reg_token", "cls_token", "pos_embed")}
    cls_pos = torch.randn(1, 1, 384)
    official["mask_token"] = torch.zeros(1, 384)
    official["register_tokens"] = timm_sd["reg_token"]
    official["cls_token"] = timm_sd["cls_token"] - cls_pos
    official["pos_embed"] = torch.cat([cls_pos, timm_sd["pos_embed"]], dim=1)
    torch.save(official, tmp_path / "dinov2_vits14_reg4_pretrain.pth")
    net = build_backbone(
        "vit_small_patch14_reg4_dinov2",
        pretrained=str(tmp_path / "dinov2_vits14_reg4_pretrain.pth"),
        output_stride=14,
        depth=1,
    )
    for key, value in timm_sd.items():
        torch.testing.assert_close(net.body.state_dict()[key], value, msg=key)


def _to_openai_clip(timm_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's CLIP ViT names back to OpenAI's `visual.*` layout (the inverse of timm's map)."""
    swaps = [
        ("patch_embed.proj", "conv1"), ("norm_pre", "ln_pre"), ("blocks.", "transformer.resblocks."),
        ("norm1", "ln_1"), ("norm2", "ln_2"), ("attn.qkv.", "attn.in_proj_"), ("attn.proj", "attn.out_proj"),
        ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj"),
    ]  # fmt: skip
    out = {}
    for key, value in timm_sd.items():
        if key == "cls_token":
            out["visual.class_embedding"] = value[0, 0]
        elif key == "pos_embed":
            out["visual.positional_embedding"] = value[0]
        elif key.startswith("norm."):
            out["visual.ln_post." + key[5:]] = value
        else:
            for a, b in swaps:
                key = key.replace(a, b)
            out["visual." + key] = value
    out["visual.proj"] = torch.randn(768, 512)  # CLIP's projection: a head, ignored
    out["token_embedding.weight"] = torch.randn(10, 512)  # the text tower: not ours
    return out


def test_local_file_in_openai_clip_layout(tmp_path):
    torch.manual_seed(1)
    source = build_backbone("vit_base_patch16_clip_224", output_stride=16, depth=1)
    timm_sd = _weights(source)
    torch.save({"state_dict": _to_openai_clip(timm_sd)}, tmp_path / "clip_vit_b16.pth")
    net = build_backbone(
        "vit_base_patch16_clip_224", pretrained=str(tmp_path / "clip_vit_b16.pth"), output_stride=16, depth=1
    )
    for key, value in timm_sd.items():
        torch.testing.assert_close(net.body.state_dict()[key], value, msg=key)
    assert not net.pretrained_report.missing


def test_position_embeddings_of_another_grid_are_resampled(tmp_path):
    torch.manual_seed(1)
    small_grid = build_backbone("vit_small_patch14_dinov2", output_stride=14, depth=1, img_size=224)
    sd = _weights(small_grid)
    assert sd["pos_embed"].shape == (1, 1 + 16 * 16, 384)
    save_file(sd, tmp_path / "w.safetensors")
    net = build_backbone(  # the default 518 px model: 37 x 37 grid
        "vit_small_patch14_dinov2", pretrained=str(tmp_path / "w.safetensors"), output_stride=14, depth=1
    )
    assert net.body.pos_embed.shape == (1, 1 + 37 * 37, 384)
    torch.testing.assert_close(net.body.cls_token, sd["cls_token"])


def test_a_file_of_another_architecture_is_a_clear_error(tmp_path):
    torch.manual_seed(1)
    save_file(_weights(build_backbone("vit_base_patch16_clip_224", output_stride=16, depth=1)), tmp_path / "b.safetensors")
    with pytest.raises(CheckpointError, match="do not match the model's shapes"):
        build_backbone(
            "vit_small_patch14_dinov2", pretrained=str(tmp_path / "b.safetensors"), output_stride=14, depth=1
        )


@pytest.mark.parametrize(
    "name,backbone,stride,frozen",
    [
        ("voc_dinov2", "vit_base_patch14_dinov2", 14, False),
        ("coco_dinov2", "vit_base_patch14_dinov2", 14, False),
        ("voc_clip", "vit_base_patch16_clip_224", 16, True),
        ("coco_clip", "vit_base_patch16_clip_224", 16, True),
    ],
)
def test_configs_build_their_backbone(name, backbone, stride, frozen):
    cfg = load_config(name)
    m = cfg.model
    assert (m.backbone, m.output_stride, m.freeze_backbone, m.pooling) == (backbone, stride, frozen, "gmp")
    assert cfg.data.train_aug.crop_size % stride == 0  # whole patches at the training crop
    assert cfg.data.type == ("coco" if name.startswith("coco") else "voc")
    build_backbone(m.backbone, output_stride=int(m.output_stride), depth=1)  # a valid pair
