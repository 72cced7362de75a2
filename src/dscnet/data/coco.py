"""MS COCO 2014 (or any COCO-format instance JSON) as a WSSS dataset.

- Classes: the JSON's categories sorted by id, mapped to contiguous labels 1..C
  (80 for COCO), names from the JSON; background is 0.
- Tags: every category with at least one annotation in the image, crowd ones included
  (the class is in the picture even if its pixels are not delineated).
- Semantic masks (for evaluation), built with pycocotools ``annToMask``: crowd regions
  are painted first as 255 (ignore: a crowd region mixes the class with background, so
  scoring it either way would be wrong), then the non-crowd instances in annotation
  order, each over the earlier ones (where two instances overlap, the later one wins).
  Images without annotations are all background (and carry no tag, so training skips them).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from dscnet.data.base import WSSSDataset
from dscnet.data.readers import read_image
from dscnet.data.registry import register_dataset, require_root
from dscnet.errors import DatasetError


def _load_coco(path: Path) -> Any:
    from pycocotools.coco import COCO  # a core dependency; imported lazily (slow import)

    if not path.is_file():
        raise DatasetError(f"{path}: COCO annotation file not found")
    try:
        # pycocotools prints progress to stdout; keep the CLI's output clean.
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not a valid COCO JSON file ({exc})") from None
    except (KeyError, TypeError, AssertionError) as exc:
        raise DatasetError(
            f"{path}: not a COCO instances file (missing or bad field {exc})"
        ) from None


class COCODataset(WSSSDataset):
    """COCO-format instance annotations as tags + semantic masks (see the module docstring).

    Args:
        root: dataset root.
        split: split name (only used in messages).
        images_dir: image folder, relative to ``root`` (e.g. ``val2014``) or absolute.
        annotation_file: instances JSON, relative to ``root`` or absolute.
        max_pixels: larger images are refused (see :func:`~dscnet.data.readers.read_image`).
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        images_dir: str | Path,
        annotation_file: str | Path,
        max_pixels: int | None = None,
    ) -> None:
        self.max_pixels = max_pixels
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: dataset root not found (data.root)")
        self.split = split
        ann_path = Path(annotation_file)
        ann_path = ann_path if ann_path.is_absolute() else self.root / ann_path
        img_dir = Path(images_dir)
        self.image_dir = img_dir if img_dir.is_absolute() else self.root / img_dir
        if not self.image_dir.is_dir():
            raise DatasetError(f"{self.image_dir}: COCO image folder not found")
        self.source = str(ann_path)
        self.coco = _load_coco(ann_path)
        cats = sorted(self.coco.loadCats(self.coco.getCatIds()), key=lambda c: c["id"])
        if not cats:
            raise DatasetError(f"{ann_path}: no categories")
        self.cat_to_label = {int(c["id"]): n + 1 for n, c in enumerate(cats)}
        self.class_names = ["background", *(str(c["name"]) for c in cats)]
        self.image_ids = sorted(self.coco.getImgIds())
        infos = self.coco.loadImgs(self.image_ids)
        self.ids = [Path(info["file_name"]).stem for info in infos]
        self._files = [str(info["file_name"]) for info in infos]
        self._sizes = [(int(info["height"]), int(info["width"])) for info in infos]
        with os.scandir(self.image_dir) as it:
            present = {e.name for e in it}
        missing = [
            f
            for f in self._files
            if Path(f).name not in present and not (self.image_dir / f).is_file()
        ]
        if missing:
            raise DatasetError(
                f"{ann_path}: {len(missing)} images are missing from {self.image_dir} "
                f"(e.g. {', '.join(missing[:3])})"
            )
        self.tags = np.zeros((len(self.ids), len(cats)), dtype=np.uint8)
        for n, img_id in enumerate(self.image_ids):
            for ann in self.coco.imgToAnns.get(img_id, []):
                self.tags[n, self._label(ann) - 1] = 1
        self.has_masks = True
        self._check_tags()

    def _label(self, ann: dict) -> int:
        cat = int(ann["category_id"])
        if cat not in self.cat_to_label:
            raise DatasetError(
                f"{self.source}: annotation {ann.get('id')} has category id {cat}, "
                "which is not in the categories list"
            )
        return self.cat_to_label[cat]

    def load_image(self, index: int) -> np.ndarray:
        return read_image(self.image_dir / self._files[index], self.max_pixels)

    def load_mask(self, index: int) -> np.ndarray:
        h, w = self._sizes[index]
        mask = np.zeros((h, w), dtype=np.uint8)
        anns = [
            a for a in self.coco.imgToAnns.get(self.image_ids[index], []) if a.get("segmentation")
        ]
        for ann in (a for a in anns if a.get("iscrowd", 0)):
            mask[self.coco.annToMask(ann) > 0] = 255
        for ann in (a for a in anns if not a.get("iscrowd", 0)):
            mask[self.coco.annToMask(ann) > 0] = self._label(ann)
        return mask

    def describe(self, index: int) -> str:
        return f"{self.image_dir / self._files[index]} (annotations: {self.source})"


# ----------------------------------------------------------------------------- registration
@register_dataset("coco")
def build_coco(cfg: DictConfig, split: str) -> COCODataset:
    """``data.type=coco``: ``data.coco.{train,val}_{images,annotations}`` under ``data.root``."""
    coco = cfg.data.coco
    if split in (cfg.data.val_split, "val"):
        images, annotations = coco.val_images, coco.val_annotations
    elif split in (cfg.data.train_split, "train"):
        images, annotations = coco.train_images, coco.train_annotations
    else:
        raise DatasetError(
            f"COCO split '{split}' is unknown: use '{cfg.data.train_split}' (data.coco.train_*) "
            f"or '{cfg.data.val_split}' (data.coco.val_*)"
        )
    return COCODataset(require_root(cfg), split, images, annotations, cfg.data.max_pixels)
