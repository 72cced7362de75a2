"""The dataset interface shared by every data source (file readers: :mod:`dscnet.data.readers`).

Every source (synthetic benchmark, VOC, COCO, plain folder) is a :class:`WSSSDataset`:
ids, class names (background first), multi-hot tags over the C foreground classes, and
``load_image`` / ``load_mask``. :class:`TransformedDataset` turns one into the tensors the
training and evaluation loops consume, so every dataset goes through one code path.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch

from dscnet.errors import DatasetError

logger = logging.getLogger(__name__)

IGNORE_INDEX = 255
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


class WSSSDataset:
    """Base class of every dataset: images, image-level tags and optional pixel masks.

    Subclasses set, in ``__init__``:

    - ``ids``: one string per image;
    - ``class_names``: background first, length ``C + 1``;
    - ``tags``: ``np.ndarray`` uint8 ``[N, C]`` multi-hot over the foreground classes;
    - ``has_masks``: whether :meth:`load_mask` returns ground truth;
    - ``source``: what the split was read from (a split file, a JSON, ...), for messages;

    and implement :meth:`load_image` and :meth:`load_mask`.
    """

    ids: list[str]
    class_names: list[str]
    tags: np.ndarray
    has_masks: bool
    source: str

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_classes(self) -> int:
        """Number of foreground classes C."""
        return len(self.class_names) - 1

    def load_image(self, index: int) -> np.ndarray:
        """RGB image ``[H, W, 3]`` uint8 of item ``index``."""
        raise NotImplementedError

    def load_mask(self, index: int) -> np.ndarray | None:
        """Label mask ``[H, W]`` uint8 (0 = background, 1..C, 255 = ignore) or ``None``."""
        raise NotImplementedError

    def describe(self, index: int) -> str:
        """Where item ``index`` comes from (a file path), for error messages."""
        return f"{self.source} item {index} ({self.ids[index]})"

    def load_sample(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Image and mask of item ``index``, checked to have the same size."""
        image = self.load_image(index)
        mask = self.load_mask(index)
        if mask is not None and mask.shape != image.shape[:2]:
            raise DatasetError(
                f"{self.describe(index)}: mask size {mask.shape[1]}x{mask.shape[0]} differs "
                f"from image size {image.shape[1]}x{image.shape[0]} (width x height)"
            )
        return image, mask

    def _check_tags(self) -> None:
        """Validate the attributes a subclass set (programming errors, not user errors)."""
        n, c = len(self.ids), len(self.class_names) - 1
        if self.tags.shape != (n, c) or self.tags.dtype != np.uint8:
            raise ValueError(
                f"tags must be uint8 [{n}, {c}], got {self.tags.dtype} {self.tags.shape}"
            )


class SubsetDataset(WSSSDataset):
    """A view of some items of another dataset (same classes, masks and files)."""

    def __init__(self, dataset: WSSSDataset, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        self.ids = [dataset.ids[i] for i in self.indices]
        self.class_names = list(dataset.class_names)
        self.tags = dataset.tags[self.indices]
        self.has_masks = dataset.has_masks
        self.source = dataset.source

    def load_image(self, index: int) -> np.ndarray:
        return self.dataset.load_image(int(self.indices[index]))

    def load_mask(self, index: int) -> np.ndarray | None:
        return self.dataset.load_mask(int(self.indices[index]))

    def describe(self, index: int) -> str:
        return self.dataset.describe(int(self.indices[index]))


def drop_untagged(dataset: WSSSDataset) -> WSSSDataset:
    """Remove images that carry no tag (they teach a tag classifier nothing).

    Used for training sets only; evaluation keeps them. One warning counts the skipped
    images and names the split they came from.
    """
    keep = np.flatnonzero(dataset.tags.any(axis=1))
    skipped = len(dataset) - len(keep)
    if skipped == 0:
        return dataset
    if len(keep) == 0:
        raise DatasetError(f"{dataset.source}: none of the {len(dataset)} images has a tag")
    logger.warning("skipped %d images with no tags in %s", skipped, dataset.source)
    return SubsetDataset(dataset, keep)


# ----------------------------------------------------------------------------- labels
def tags_from_mask(
    mask: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """Multi-hot uint8 ``[C]`` of the foreground classes present in ``mask``."""
    present = np.unique(mask)
    present = present[(present >= 1) & (present <= num_classes) & (present != ignore_index)]
    tags = np.zeros(num_classes, dtype=np.uint8)
    tags[present.astype(np.int64) - 1] = 1
    return tags


# ----------------------------------------------------------------------------- tensors
class SampleTransform(Protocol):
    """``(image uint8 HxWx3, mask uint8 HxW, rng) -> (image [3,h,w], mask [h,w], valid [h,w])``."""

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


class TransformedDataset(torch.utils.data.Dataset):
    """A :class:`WSSSDataset` as tensors: ``{"image", "tags", "mask", "valid", "index", "id"}``.

    - ``image`` float ``[3, H, W]`` normalised; ``tags`` float ``[C]``;
    - ``mask`` long ``[H, W]``, 255 where unknown (everywhere when the dataset has no masks,
      and in padding);
    - ``valid`` bool ``[H, W]``: True on pixels that come from the image (False on crop or
      batch padding), so pseudo labels can ignore padding;
    - ``index`` int (position in this dataset) and ``id`` str.

    An item key is either an index or ``(index, seed)``; the seed (given by the training
    sampler, derived from (seed, step, position)) drives the augmentation, so a sample's
    augmentation does not depend on the number of workers. Without a seed the augmentation
    RNG is drawn from torch's global generator (seeded by ``seed_everything``/worker init)
    by random transforms only.
    """

    def __init__(
        self, dataset: WSSSDataset, transform: SampleTransform, ignore_index: int = IGNORE_INDEX
    ) -> None:
        self.dataset = dataset
        self.transform = transform
        self.ignore_index = ignore_index

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def tags(self) -> np.ndarray:
        return self.dataset.tags

    @property
    def ids(self) -> list[str]:
        return self.dataset.ids

    @property
    def class_names(self) -> list[str]:
        return self.dataset.class_names

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    @property
    def has_masks(self) -> bool:
        return self.dataset.has_masks

    def __getitem__(self, key: Any) -> dict[str, Any]:
        rng: np.random.Generator | None = None
        if isinstance(key, (tuple, list)):
            index, rng = int(key[0]), np.random.default_rng(int(key[1]))
        else:
            # No seed: a random transform draws one from torch's global generator (seeded
            # per worker); the eval transform draws nothing, so evaluating never shifts
            # the global random state that training relies on.
            index = int(key)
        image, mask = self.dataset.load_sample(index)
        if mask is None:
            mask = np.full(image.shape[:2], self.ignore_index, dtype=np.uint8)
        img_t, mask_t, valid_t = self.transform(image, mask, rng)
        return {
            "image": img_t,
            "tags": torch.from_numpy(self.dataset.tags[index].astype(np.float32)),
            "mask": mask_t,
            "valid": valid_t,
            "index": index,
            "id": self.dataset.ids[index],
        }
