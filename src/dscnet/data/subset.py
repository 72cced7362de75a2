"""Fixed evaluation subsets: part of a split, the same images at every evaluation.

Periodic evaluations during a COCO run score a fixed part of the 40,504 validation images
(``eval.val_subset``), as the peers do (ToCo's ``val_part`` list: 5,000 images); the final
evaluation scores the whole split. :func:`eval_subset` picks the images and
:class:`SubsetInfo` says which they were, so every reported number can name them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dscnet.data.base import SubsetDataset, TransformedDataset
from dscnet.errors import ConfigError


@dataclass(frozen=True)
class SubsetInfo:
    """Which images of ``split`` an evaluation scored."""

    split: str
    images: int  # scored
    split_images: int  # in the whole split
    seed: int | None = None  # None: the first ``images`` in the split's order

    @property
    def is_subset(self) -> bool:
        return self.images < self.split_images

    def describe(self) -> str:
        """``"val, all 1449 images"``, ``"val, first 5000 of 40504 images"`` or
        ``"val, 5000 of 40504 images (seed 3)"``."""
        if not self.is_subset:
            return f"{self.split}, all {self.split_images} images"
        if self.seed is None:
            return f"{self.split}, first {self.images} of {self.split_images} images"
        return f"{self.split}, {self.images} of {self.split_images} images (seed {self.seed})"

    def as_dict(self) -> dict[str, object]:
        """For ``metrics.json``'s ``extra``."""
        return {
            "split": self.split,
            "images": self.images,
            "split_images": self.split_images,
            "subset": None if not self.is_subset else ("first" if self.seed is None else f"seed {self.seed}"),
        }


def subset_indices(length: int, size: int | None, seed: int | None = None) -> np.ndarray:
    """Indices of ``size`` items of ``range(length)``: the first ones, or (with ``seed``) a
    seeded sample kept in increasing order. ``size=None`` or ``size >= length``: all.

    Raises:
        ConfigError: ``size`` below 1.
    """
    if size is None or int(size) >= length:
        return np.arange(length)
    size = int(size)
    if size < 1:
        raise ConfigError(f"eval.val_subset must be null or >= 1, got {size}")
    if seed is None:
        return np.arange(size)
    picked = np.random.default_rng(int(seed)).choice(length, size=size, replace=False)
    return np.sort(picked)


def eval_subset(
    dataset: TransformedDataset, split: str, size: int | None, seed: int | None = None
) -> tuple[TransformedDataset, SubsetInfo]:
    """``dataset`` restricted to :func:`subset_indices` (itself when that is everything)."""
    indices = subset_indices(len(dataset), size, seed)
    info = SubsetInfo(split, len(indices), len(dataset), None if seed is None else int(seed))
    if not info.is_subset:
        return dataset, info
    view = SubsetDataset(dataset.dataset, indices)
    return TransformedDataset(view, dataset.transform, dataset.ignore_index), info
