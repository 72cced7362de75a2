"""Training augmentation, evaluation transform, normalisation and the same-size collate.

Transforms take numpy uint8 images/masks and an explicit random generator, so that a
sample's augmentation is a function of its seed alone (see ``TransformedDataset``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from dscnet.data.base import IGNORE_INDEX

T = TypeVar("T")


def as_numpy_rng(rng: np.random.Generator | torch.Generator | int | None) -> np.random.Generator:
    """Accept a numpy Generator, a torch Generator or an int seed; return a numpy Generator."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, torch.Generator):
        return np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=rng).item()))
    if rng is None:
        return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
    return np.random.default_rng(int(rng))


def _to_float_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` -> float ``[3, H, W]`` in [0, 1] (copies, so read-only input is fine)."""
    arr = np.ascontiguousarray(np.asarray(image, dtype=np.float32).transpose(2, 0, 1))
    return torch.from_numpy(arr).div_(255.0)


def _normalize(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.as_tensor(mean, dtype=image.dtype).view(3, 1, 1)
    s = torch.as_tensor(std, dtype=image.dtype).view(3, 1, 1)
    return (image - m) / s


def denormalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Undo the normalisation: ``[B, 3, H, W]`` or ``[3, H, W]`` -> RGB in ``[0, 1]``.

    Follows the input's device and dtype.
    """
    shape = (1, 3, 1, 1) if images.dim() == 4 else (3, 1, 1)
    m = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(shape)
    s = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(shape)
    return (images * s + m).clamp(0.0, 1.0)


class EvalTransform:
    """Normalise only: no resizing, so predictions are scored at the original resolution."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, rng: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        img = _normalize(_to_float_tensor(image), self.mean, self.std)
        mask_t = torch.from_numpy(np.array(mask, dtype=np.int64))
        valid = torch.ones(mask_t.shape, dtype=torch.bool)
        return img, mask_t, valid


class TrainTransform:
    """Random rescale, horizontal flip, colour jitter, normalisation, padded random crop.

    - rescale by a factor drawn uniformly from ``scale_range`` (bilinear image, nearest mask);
    - flip with probability 0.5 when ``hflip``;
    - colour jitter: brightness, contrast and saturation factors in ``[1-j, 1+j]`` and hue
      shift in ``[-j/4, j/4]``, applied in a random order (torchvision's ``ColorJitter``
      semantics, but drawn from the given generator so that it is reproducible);
    - normalise, then pad to at least ``crop_size`` (image with 0 = the mean colour after
      normalisation, mask with ``ignore_index``, ``valid`` with False) and crop a random
      ``crop_size`` window.
    """

    def __init__(
        self,
        crop_size: int | Sequence[int],
        scale_range: Sequence[float] = (1.0, 1.0),
        hflip: bool = True,
        color_jitter: float = 0.0,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        if isinstance(crop_size, int):
            crop_size = (crop_size, crop_size)
        self.crop_h, self.crop_w = (int(v) for v in crop_size)
        lo, hi = (float(v) for v in scale_range)
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
        self.scale_range = (lo, hi)
        self.hflip = bool(hflip)
        self.color_jitter = float(color_jitter)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.ignore_index = int(ignore_index)

    def _jitter(self, img: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        j = self.color_jitter
        factors = rng.uniform(max(0.0, 1 - j), 1 + j, size=3)
        hue = rng.uniform(-j / 4, j / 4)
        for op in rng.permutation(4):
            if op == 0:
                img = TF.adjust_brightness(img, float(factors[0]))
            elif op == 1:
                img = TF.adjust_contrast(img, float(factors[1]))
            elif op == 2:
                img = TF.adjust_saturation(img, float(factors[2]))
            else:
                img = TF.adjust_hue(img, float(hue))
        return img

    def __call__(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        rng: np.random.Generator | torch.Generator | int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rng = as_numpy_rng(rng)
        h, w = image.shape[:2]
        scale = rng.uniform(*self.scale_range)
        new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
        if (new_h, new_w) != (h, w):
            image = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
            mask = np.asarray(Image.fromarray(mask).resize((new_w, new_h), Image.NEAREST))
        if self.hflip and rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        img = _to_float_tensor(image)
        if self.color_jitter > 0:
            img = self._jitter(img, rng)
        img = _normalize(img, self.mean, self.std)
        mask_t = torch.from_numpy(np.array(mask, dtype=np.int64))
        valid = torch.ones(mask_t.shape, dtype=torch.bool)

        # Pad at a random offset (not always bottom-right) so padding is not a fixed cue.
        pad_h, pad_w = max(0, self.crop_h - new_h), max(0, self.crop_w - new_w)
        if pad_h or pad_w:
            top, left = int(rng.integers(0, pad_h + 1)), int(rng.integers(0, pad_w + 1))
            hh, ww = new_h + pad_h, new_w + pad_w
            img_p = img.new_zeros((3, hh, ww))
            img_p[:, top : top + new_h, left : left + new_w] = img
            mask_p = torch.full((hh, ww), self.ignore_index, dtype=torch.int64)
            mask_p[top : top + new_h, left : left + new_w] = mask_t
            valid_p = torch.zeros((hh, ww), dtype=torch.bool)
            valid_p[top : top + new_h, left : left + new_w] = True
            img, mask_t, valid = img_p, mask_p, valid_p
        hh, ww = mask_t.shape
        y0 = int(rng.integers(0, hh - self.crop_h + 1))
        x0 = int(rng.integers(0, ww - self.crop_w + 1))
        sl = (slice(y0, y0 + self.crop_h), slice(x0, x0 + self.crop_w))
        return img[:, sl[0], sl[1]].contiguous(), mask_t[sl].contiguous(), valid[sl].contiguous()


def group_by_size(items: Sequence[T], size_of: Callable[[T], tuple[int, ...]]) -> list[list[T]]:
    """Items grouped by ``size_of(item)``, groups in order of first appearance, items in order
    inside each group: what may share one forward pass without padding."""
    groups: dict[tuple[int, ...], list[T]] = {}
    for item in items:
        groups.setdefault(tuple(size_of(item)), []).append(item)
    return list(groups.values())


def collate_same_size(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Collate evaluation samples into batches of equal image size, never padding.

    Returns one batch dict per distinct ``(H, W)`` in ``batch`` (in order of first
    appearance), each with ``image [B, 3, H, W]``, ``tags [B, C]``, ``mask [B, H, W]``,
    ``valid [B, H, W]``, ``index [B]`` and ``id`` (list). A network then sees every image at
    its own size whatever ``eval.batch_size`` is and whichever images share a loader batch,
    so a score does not depend on them (padding would change predictions near the borders).
    """
    return [
        {
            "image": torch.stack([s["image"] for s in items]),
            "tags": torch.stack([s["tags"] for s in items]),
            "mask": torch.stack([s["mask"] for s in items]),
            # Datasets other than TransformedDataset may leave "valid" out: every pixel is real.
            "valid": torch.stack([s.get("valid", torch.ones(s["mask"].shape, dtype=torch.bool)) for s in items]),
            "index": torch.tensor([int(s["index"]) for s in items], dtype=torch.int64),
            "id": [s["id"] for s in items],
        }
        for items in group_by_size(batch, lambda s: s["image"].shape[-2:])
    ]
