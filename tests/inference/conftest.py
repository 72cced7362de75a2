"""Test doubles for dscnet.inference: tiny models with the DSCNetModel inference methods."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
CLASS_NAMES = ["background", "red thing", "green/thing"]


class ColourModel(nn.Module):
    """Known answers: segmentation logits are (0, R, G) of the normalised image, so red
    pixels are class 1, green class 2 and dark pixels background. CAM logits are (R, G)
    average-pooled by ``stride`` (a feature-resolution map), image scores their mean."""

    def __init__(self, stride: int = 4) -> None:
        super().__init__()
        self.stride = stride
        self.proj = nn.Conv2d(3, 2, 1, bias=False)
        with torch.no_grad():
            self.proj.weight.zero_()
            self.proj.weight[0, 0] = 1.0
            self.proj.weight[1, 1] = 1.0

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        fg = self.proj(images)
        return torch.cat([torch.zeros_like(fg[:, :1]), fg], dim=1)

    def cam(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(F.avg_pool2d(images, self.stride, ceil_mode=True))

    def classify(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cam = self.cam(images)
        return cam, cam.mean(dim=(2, 3))


class StridedModel(nn.Module):
    """A DSCNet-like network: strided features, a head, logits upsampled to the input size."""

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1)
        )
        self.seg = nn.Conv2d(8, num_classes + 1, 1)
        self.cls = nn.Conv2d(8, num_classes, 1, bias=False)

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.seg(F.relu(self.body(images)))
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)

    def cam(self, images: torch.Tensor) -> torch.Tensor:
        return self.cls(F.relu(self.body(images)))


@pytest.fixture
def colour_model() -> ColourModel:
    return ColourModel().eval()


@pytest.fixture
def strided_model() -> StridedModel:
    return StridedModel().eval()
