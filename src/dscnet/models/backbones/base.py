"""The interface every backbone implements: a dense feature extractor.

A backbone maps images ``[B, 3, H, W]`` to a feature map ``[B, out_channels, ceil(H/os),
ceil(W/os)]`` where ``os`` is its ``output_stride``; ``feature_levels`` also returns the
finer maps that multi-level decoders fuse (the output map alone by default). It works for any H and W: the built-in
backbones reach the ``ceil`` size natively (convolutions with padding, TF "same" padding,
ViT patch embedding with ``dynamic_img_pad``), so no explicit pad-and-crop is needed.
"""

from __future__ import annotations

import torch
from torch import nn

from dscnet.errors import ConfigError

#: State-dict prefixes of ImageNet classifiers; such keys in a pretrained file are ignored.
CLASSIFIER_PREFIXES: tuple[str, ...] = ("fc.", "head.", "classifier.", "head_dist.")


class Backbone(nn.Module):
    """Base class of the built-in backbones.

    Attributes:
        out_channels: channels ``D`` of the feature map.
        output_stride: input pixels per feature-map cell (8, 16 or 32).
        is_transformer: True for ViT-like backbones (the model pools them with GMP).
        channels_last: True after ``build_backbone(..., channels_last=True)``; the input is
            then converted to ``torch.channels_last`` at the start of ``forward``.
        input_mean, input_std: the normalisation the pretrained weights expect (``None`` when
            there are none, e.g. the small CNN trained from scratch).
        pretrained_report: what the last weight load did (``LoadReport``), or ``None``.
    """

    out_channels: int
    output_stride: int
    is_transformer: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.channels_last = False
        self.input_mean: tuple[float, float, float] | None = None
        self.input_std: tuple[float, float, float] | None = None
        self.pretrained_report = None

    @property
    def level_channels(self) -> list[int]:
        """Channels of each map :meth:`feature_levels` returns (finest first)."""
        return [self.out_channels]

    def feature_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps at several strides, finest first; the last one is ``forward(x)``.

        The default is the single output map; CNN backbones also return their stride-8 and
        stride-16 stages, for multi-level decoders (``model.decoder: fpn``).
        """
        return [self(x)]

    def freeze_levels(self, levels: int) -> None:
        """Freeze the stem and the first ``levels`` feature levels (``model.freeze_levels``).

        Backbones that support it override this; the default refuses any ``levels > 0``.
        """
        if levels > 0:
            raise ConfigError(
                f"model.freeze_levels={levels}: {type(self).__name__} cannot freeze its first "
                "levels (the timm CNNs can; use model.freeze_backbone for the whole encoder)"
            )

    def weights_target(self) -> nn.Module:
        """The module whose state-dict names pretrained files use (e.g. the timm model)."""
        return self

    def convert_checkpoint(
        self, state_dict: dict[str, torch.Tensor], source: str
    ) -> dict[str, torch.Tensor]:
        """Translate a foreign naming scheme to ``weights_target()``'s names (default: none)."""
        return state_dict

    def _prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        # channels_last weights want channels_last activations; otherwise every conv converts.
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x
