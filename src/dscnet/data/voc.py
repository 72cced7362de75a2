"""PASCAL VOC 2012 layout (and any dataset written in it, e.g. the synthetic benchmark).

::

    root/
      JPEGImages/<id>.<jpg|png|...>
      SegmentationClass/<id>.png        palette or greyscale PNGs of class indices
      SegmentationClassAug/<id>.png     (SBD-augmented masks; preferred when present)
      ImageSets/Segmentation/<split>.txt   train, val, train_aug (SBD), test, ...
      classes.txt                       optional: class names, background first
      cls_labels.npy                    optional: dict id -> multi-hot [C] (AFA/ToCo format)

Tags come from the labels file when it exists, otherwise from the masks.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from dscnet.data.base import VOC_CLASSES, WSSSDataset, tags_from_mask
from dscnet.data.readers import image_size, read_class_file, read_image, read_mask
from dscnet.data.registry import register_dataset, require_root
from dscnet.data.safe_pickle import load_pickled_npy
from dscnet.errors import DatasetError

logger = logging.getLogger(__name__)

# Where split files are looked for, in order (SBD's train_aug is often shipped in
# ImageSets/SegmentationAug or next to the data).
SPLIT_DIRS = ("ImageSets/Segmentation", "ImageSets/SegmentationAug", ".")
MASK_DIRS = ("SegmentationClassAug", "SegmentationClass")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# AFA/ToCo ship cls_labels_onehot.npy; accepted when the default name is absent.
FALLBACK_LABEL_FILES = ("cls_labels_onehot.npy",)


def available_splits(root: Path) -> list[str]:
    """Names of the split files found under ``root``."""
    found: set[str] = set()
    for d in SPLIT_DIRS:
        folder = root / d
        if folder.is_dir():
            found.update(p.stem for p in folder.glob("*.txt") if p.name != "classes.txt")
    return sorted(found)


def find_split_file(root: Path, split: str) -> Path:
    """The ``<split>.txt`` file of ``split``; DatasetError listing the splits otherwise."""
    for d in SPLIT_DIRS:
        path = root / d / f"{split}.txt"
        if path.is_file():
            return path
    splits = available_splits(root)
    raise DatasetError(
        f"{root / SPLIT_DIRS[0] / (split + '.txt')}: split file not found "
        f"(splits available in {root}: {', '.join(splits) if splits else 'none'})"
    )


def read_split_file(path: Path) -> list[str]:
    """Image ids of a split file.

    Accepts plain id lists, lines with extra columns (``id 1``) and DeepLab-style lists
    (``/JPEGImages/id.jpg /SegmentationClassAug/id.png``): the id is the first token's stem.
    """
    ids = []
    for line in path.read_text(encoding="utf-8").splitlines():
        token = line.split()[0] if line.strip() else ""
        if not token or token.startswith("#"):
            continue
        if "/" in token or Path(token).suffix.lower() in IMAGE_EXTS:
            token = Path(token).stem
        ids.append(token)
    if not ids:
        raise DatasetError(f"{path}: split file lists no image")
    seen: set[str] = set()
    dup = [i for i in ids if i in seen or seen.add(i)]
    if dup:
        raise DatasetError(f"{path}: image ids listed twice: {dup[:5]}")
    return ids


def load_labels_file(path: Path, ids: list[str], num_classes: int) -> tuple[np.ndarray, list[str]]:
    """Tags ``[N, C]`` from an ``.npy`` dict id -> multi-hot; also the ids it lacks.

    The file is unpickled by :func:`~dscnet.data.safe_pickle.load_pickled_npy`: a payload that
    names any callable but numpy's array reconstruction is refused (DatasetError) unrun.
    """
    # The field's format is a pickled dict: read without running anything it names.
    obj = load_pickled_npy(path)
    if not isinstance(obj, dict):
        raise DatasetError(
            f"{path}: labels file must hold a dict image id -> multi-hot array of length "
            f"{num_classes}, found {type(obj).__name__}"
        )
    tags = np.zeros((len(ids), num_classes), dtype=np.uint8)
    missing = []
    for n, sid in enumerate(ids):
        if sid not in obj:
            missing.append(sid)
            continue
        vec = np.asarray(obj[sid]).reshape(-1)
        if vec.shape[0] != num_classes:
            hint = (
                " (it seems to include background; drop that column)"
                if vec.shape[0] == num_classes + 1
                else ""
            )
            raise DatasetError(
                f"{path}: labels of '{sid}' have length {vec.shape[0]}, but the class list has "
                f"{num_classes} foreground classes{hint}"
            )
        tags[n] = vec > 0
    return tags, missing


class VOCDataset(WSSSDataset):
    """A dataset in PASCAL VOC layout (see the module docstring).

    Args:
        root: dataset root (``VOCdevkit/VOC2012`` or a folder written by ``dscnet data synth``).
        split: split name; ``<split>.txt`` is looked up in ``ImageSets/Segmentation``,
            ``ImageSets/SegmentationAug`` and the root.
        mask_dir: mask folder under the root; ``None`` picks ``SegmentationClassAug`` when it
            exists, else ``SegmentationClass``, else no masks (e.g. the VOC test set).
        labels_file: ``.npy`` dict id -> multi-hot ``[C]`` (relative to the root or absolute);
            images it does not list take their tags from their masks.
        ignore_index: label value that means "ignore".
        max_pixels: larger images and masks are refused (see
            :func:`~dscnet.data.readers.read_image`).
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        mask_dir: str | None = None,
        labels_file: str | None = "cls_labels.npy",
        ignore_index: int = 255,
        max_pixels: int | None = None,
    ) -> None:
        self.max_pixels = max_pixels
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: dataset root not found (data.root)")
        self.split = split
        self.ignore_index = ignore_index
        split_file = find_split_file(self.root, split)
        self.source = str(split_file)
        self.ids = read_split_file(split_file)
        class_file = self.root / "classes.txt"
        self.class_names = (
            read_class_file(class_file) if class_file.is_file() else list(VOC_CLASSES)
        )
        self._image_paths = self._find_images()
        self.mask_dir = self._find_mask_dir(mask_dir)
        self._mask_paths: list[Path | None] = [None] * len(self.ids)
        if self.mask_dir is not None:
            self._mask_paths = [
                p if p.is_file() else None for p in (self.mask_dir / f"{i}.png" for i in self.ids)
            ]
        self.tags = self._load_tags(labels_file)
        n_masks = sum(p is not None for p in self._mask_paths)
        self.has_masks = n_masks == len(self.ids)
        if 0 < n_masks < len(self.ids):
            logger.warning(
                "%s: %d of %d images of %s have no mask; masks are not used for this split",
                self.mask_dir, len(self.ids) - n_masks, len(self.ids), split_file,
            )  # fmt: skip
            self._mask_paths = [None] * len(self.ids)
        self._check_tags()

    def _find_images(self) -> list[Path]:
        img_dir = self.root / "JPEGImages"
        if not img_dir.is_dir():
            raise DatasetError(f"{img_dir}: image folder not found")
        # One directory scan instead of one stat per id and extension; any extension works.
        by_stem: dict[str, str] = {}
        with os.scandir(img_dir) as it:
            for entry in it:
                stem, ext = os.path.splitext(entry.name)
                if ext.lower() in IMAGE_EXTS and (stem not in by_stem or ext.lower() == ".jpg"):
                    by_stem[stem] = entry.name
        missing = [i for i in self.ids if i not in by_stem]
        if missing:
            raise DatasetError(
                f"{self.source}: {len(missing)} listed images are missing from {img_dir} "
                f"(e.g. {', '.join(missing[:3])})"
            )
        return [img_dir / by_stem[i] for i in self.ids]

    def _find_mask_dir(self, mask_dir: str | None) -> Path | None:
        if mask_dir is not None:
            path = Path(mask_dir) if Path(mask_dir).is_absolute() else self.root / mask_dir
            if not path.is_dir():
                raise DatasetError(f"{path}: mask folder not found (data.voc.mask_dir)")
            return path
        for name in MASK_DIRS:
            path = self.root / name
            # SegmentationClassAug lacks masks of some splits in partial downloads: prefer
            # the first folder that has the split's first mask.
            if path.is_dir() and (path / f"{self.ids[0]}.png").is_file():
                return path
        return None

    def _load_tags(self, labels_file: str | None) -> np.ndarray:
        c = self.num_classes
        label_path = None
        if labels_file:
            candidates = [Path(labels_file)]
            if labels_file == "cls_labels.npy":
                candidates += [Path(n) for n in FALLBACK_LABEL_FILES]
            for cand in candidates:
                path = cand if cand.is_absolute() else self.root / cand
                if path.is_file():
                    label_path = path
                    break
            else:
                if Path(labels_file).is_absolute() or labels_file != "cls_labels.npy":
                    missing_path = (
                        candidates[0] if candidates[0].is_absolute() else self.root / candidates[0]
                    )
                    raise DatasetError(
                        f"{missing_path}: labels file not found (data.voc.labels_file)"
                    )
        if label_path is not None:
            tags, missing = load_labels_file(label_path, self.ids, c)
        else:
            tags, missing = np.zeros((len(self.ids), c), dtype=np.uint8), list(self.ids)
        if missing:
            # Derive the missing tags from the masks (reading every mask also checks ids).
            index = {sid: n for n, sid in enumerate(self.ids)}
            no_mask = {sid for sid in missing if self._mask_paths[index[sid]] is None}
            if no_mask:
                # E.g. the VOC test set: fine for inference; training drops untagged images.
                where = f"{label_path} does not list them" if label_path else "no labels file"
                logger.warning(
                    "%d images of %s have no mask and %s: their tags are unknown (left empty)",
                    len(no_mask), self.source, where,
                )  # fmt: skip
                missing = [sid for sid in missing if sid not in no_mask]
            if len(missing) > 500:
                logger.info(
                    "deriving tags of %d images of %s from their masks", len(missing), self.source
                )
            for sid in missing:
                n = index[sid]
                tags[n] = tags_from_mask(self.load_mask(n), c, self.ignore_index)
        return tags

    def load_image(self, index: int) -> np.ndarray:
        return read_image(self._image_paths[index], self.max_pixels)

    def load_mask(self, index: int) -> np.ndarray | None:
        path = self._mask_paths[index]
        if path is None:
            return None
        img_path = self._image_paths[index]
        return read_mask(
            path,
            num_classes=self.num_classes,
            expected_size=image_size(img_path, self.max_pixels),
            image_path=img_path,
            ignore_index=self.ignore_index,
            max_pixels=self.max_pixels,
        )

    def describe(self, index: int) -> str:
        return str(self._image_paths[index])


# ----------------------------------------------------------------------------- registration
def _voc_class_names(cfg: DictConfig) -> list[str]:
    class_file = Path(require_root(cfg)).expanduser() / "classes.txt"
    return read_class_file(class_file) if class_file.is_file() else list(VOC_CLASSES)


@register_dataset("voc", class_names=_voc_class_names)
def build_voc(cfg: DictConfig, split: str) -> VOCDataset:
    """``data.type=voc``: any folder in PASCAL VOC layout (``data.root``, ``data.voc.*``)."""
    return VOCDataset(
        require_root(cfg), split, mask_dir=cfg.data.voc.mask_dir,
        labels_file=cfg.data.voc.labels_file, ignore_index=cfg.data.ignore_index,
        max_pixels=cfg.data.max_pixels,
    )  # fmt: skip
