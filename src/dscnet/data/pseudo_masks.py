"""The second stage of WSSS: a dataset's images and tags with masks from a folder of labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dscnet.data.base import IGNORE_INDEX, WSSSDataset
from dscnet.data.readers import read_mask
from dscnet.errors import ConfigError, DatasetError

UNCERTAIN = ("ignore", "background")


class MaskFolderDataset(WSSSDataset):
    """Another dataset's images and tags with the masks of a folder: ``<folder>/<id>.png``.

    The second stage of WSSS: pseudo labels exported by ``dscnet pseudo`` (VOC palette PNGs,
    255 = uncertain) train the segmentation network as if they were true masks
    (``data.pseudo_masks`` with ``train.supervision=full``). Every id must have its PNG, of
    its image's size (checked when read). ``uncertain="background"``
    (``data.pseudo_uncertain``) reads their uncertain pixels as background instead of
    ignoring them: in exported labels they are mostly true background
    (``benchmarks/label_breakdown.py``), and a segmenter that never sees them as background
    paints the background as objects (docs/RESULTS.md, "Second stage").

    Raises:
        DatasetError: the folder is missing, or some ids have no mask in it.
    """

    def __init__(
        self,
        dataset: WSSSDataset,
        folder: str | Path,
        ignore_index: int = IGNORE_INDEX,
        uncertain: str = "ignore",
    ) -> None:
        if uncertain not in UNCERTAIN:
            raise ConfigError(f"data.pseudo_uncertain must be one of {', '.join(UNCERTAIN)}, got '{uncertain}'")
        self.uncertain = uncertain
        self.dataset = dataset
        self.folder = Path(folder).expanduser()
        if not self.folder.is_dir():
            raise DatasetError(f"{self.folder}: pseudo-label folder not found (data.pseudo_masks)")
        self.paths = [self.folder.joinpath(*f"{i}.png".split("/")) for i in dataset.ids]
        missing = [str(p) for p in self.paths if not p.is_file()]
        if missing:
            raise DatasetError(
                f"{self.folder}: {len(missing)} of {len(self.paths)} images of {dataset.source} have "
                f"no pseudo label (e.g. {missing[0]}); export them with `dscnet pseudo --split ...`"
            )
        self.ids = list(dataset.ids)
        self.class_names = list(dataset.class_names)
        self.tags = dataset.tags
        self.has_masks = True
        self.ignore_index = ignore_index
        self.source = f"{dataset.source} with the masks of {self.folder}"

    def load_image(self, index: int) -> np.ndarray:
        return self.dataset.load_image(index)

    def load_mask(self, index: int) -> np.ndarray:
        mask = read_mask(self.paths[index], num_classes=self.num_classes, ignore_index=self.ignore_index)
        if self.uncertain == "background":
            mask = np.where(mask == self.ignore_index, 0, mask).astype(mask.dtype)
        return mask

    def describe(self, index: int) -> str:
        return self.dataset.describe(index)
