"""A small CNN that learns the synthetic benchmark from scratch on a CPU.

Layout (default widths 32-64-128-192, about 0.84 M parameters)::

    stem    conv3x3/2 -> conv3x3          stride 2
    stage2  conv3x3/2 -> conv3x3          stride 4
    stage3  conv3x3/2 -> conv3x3          stride 8
    stage4  conv3x3 dil 2 -> conv3x3 dil 4   (output stride 8)
            conv3x3/2 -> conv3x3 dil 2       (output stride 16)

Each conv is followed by BatchNorm and ReLU. The dilated last stage gives a theoretical
receptive field of 139 px at output stride 8 (``receptive_field()``), so one feature cell
sees a whole 40-60 px object of the 112 px synthetic scenes, as CAMs need.
"""

from __future__ import annotations

import torch
from torch import nn

from dscnet.errors import ConfigError
from dscnet.models.backbones.base import Backbone
from dscnet.models.backbones.pretrained import apply_pretrained
from dscnet.models.backbones.registry import check_output_stride, register_backbone


def _conv_bn_relu(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    # padding = dilation keeps ceil(H/stride) for any H (3x3 kernels).
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SmallCNN(Backbone):
    """Four-stage VGG-style CNN with a dilated last stage.

    Args:
        widths: channels of the four stages; ``out_channels = widths[-1]``.
        output_stride: 8 (last stage dilated) or 16 (last stage strided, dilation halved).
        dilations: dilations of the two last-stage convs at output stride 8.
    """

    def __init__(
        self,
        widths: tuple[int, int, int, int] = (32, 64, 128, 192),
        output_stride: int = 8,
        dilations: tuple[int, int] = (2, 4),
    ) -> None:
        super().__init__()
        if output_stride not in (8, 16):
            raise ValueError(f"SmallCNN supports output stride 8 or 16, got {output_stride}")
        w1, w2, w3, w4 = (int(w) for w in widths)
        d1, d2 = (int(d) for d in dilations)
        if output_stride == 8:
            last = [_conv_bn_relu(w3, w4, dilation=d1), _conv_bn_relu(w4, w4, dilation=d2)]
        else:  # stride 2 replaces the first dilation; halve the second to keep the pixel span
            last = [
                _conv_bn_relu(w3, w4, stride=2),
                _conv_bn_relu(w4, w4, dilation=max(1, d2 // 2)),
            ]
        self.features = nn.Sequential(
            _conv_bn_relu(3, w1, stride=2),
            _conv_bn_relu(w1, w1),
            _conv_bn_relu(w1, w2, stride=2),
            _conv_bn_relu(w2, w2),
            _conv_bn_relu(w2, w3, stride=2),
            _conv_bn_relu(w3, w3),
            *last,
        )
        self.out_channels = w4
        self.output_stride = output_stride
        self.is_transformer = False
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def receptive_field(self) -> int:
        """Theoretical receptive field (pixels) of one output cell."""
        rf, jump = 1, 1
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                rf += (m.kernel_size[0] - 1) * m.dilation[0] * jump
                jump *= m.stride[0]
        return rf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, out_channels, ceil(H/os), ceil(W/os)]``."""
        return self.features(self._prepare_input(x))


@register_backbone("small_cnn")
def small_cnn(*, output_stride: int, pretrained: str | None, **kwargs) -> SmallCNN:
    """The from-scratch CPU backbone; ``pretrained`` may only be a local file of its own."""
    check_output_stride("small_cnn", output_stride, (8, 16))
    if pretrained == "timm":
        raise ConfigError("model.pretrained=timm: backbone 'small_cnn' has no timm weights")
    net = SmallCNN(output_stride=output_stride, **kwargs)
    return apply_pretrained(net, pretrained, "small_cnn")
