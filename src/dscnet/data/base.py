"""The dataset interface shared by every data source, and robust image/mask readers.

Every source (synthetic benchmark, VOC, COCO, plain folder) is a :class:`WSSSDataset`:
ids, class names (background first), multi-hot tags over the C foreground classes, and
``load_image`` / ``load_mask``. :class:`TransformedDataset` turns one into the tensors the
training and evaluation loops consume, so every dataset goes through one code path.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from dscnet.data.palette import voc_palette
from dscnet.errors import DatasetError

logger = logging.getLogger(__name__)

IGNORE_INDEX = 255
# Names of the background entry accepted in class-list files.
BACKGROUND_NAMES = ("background", "_background_", "__background__", "bg")
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


# ----------------------------------------------------------------------------- readers
_RGB_MODES = ("RGB",)


def _to_uint8_rgb(img: Image.Image) -> np.ndarray:
    """Convert any Pillow mode (1, L, P, RGBA, LA, CMYK, I;16, I, F, ...) to RGB uint8."""
    mode = img.mode
    if mode in _RGB_MODES:
        return np.asarray(img, dtype=np.uint8)
    if mode.startswith("I;16") or mode in ("I", "F"):
        # 16-bit / 32-bit / float greyscale: Pillow's own conversion to 8 bits clips
        # values > 255, which turns most 16-bit photos white, so rescale explicitly.
        arr = np.asarray(img).astype(np.float64)
        if mode.startswith("I;16"):
            arr = arr / 257.0
        elif mode == "F" and arr.size and np.nanmax(arr) <= 1.0:
            arr = arr * 255.0
        elif mode == "I" and arr.size and arr.max() > 255:
            arr = arr * (255.0 / 65535.0) if arr.max() <= 65535 else arr * (255.0 / arr.max())
        grey = np.clip(np.nan_to_num(arr), 0, 255).round().astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode in ("P", "PA") or (mode in ("LA", "RGBA", "La", "RGBa")):
        # Going through RGBA handles palette transparency; alpha is then dropped
        # (the colour under the alpha channel is kept, as VOC-style loaders do).
        img = img.convert("RGBA")
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _open_checked(path: Path, what: str) -> Image.Image:
    """Open and fully decode an image file, turning every failure into a DatasetError."""
    if not path.is_file():
        raise DatasetError(f"{path}: {what} file not found")
    try:
        # Our own file handle, closed once the pixels are decoded: no handle stays open
        # (multi-frame files would otherwise keep theirs), only the first frame is read.
        with warnings.catch_warnings(), path.open("rb") as fh:
            # Pillow warns above MAX_IMAGE_PIXELS and raises above twice that: refuse both.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(fh)
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DatasetError(
            f"{path}: {what} is larger than Pillow's limit of {Image.MAX_IMAGE_PIXELS} pixels "
            "and was refused as a possible decompression bomb (raise PIL.Image.MAX_IMAGE_PIXELS "
            "if the file is genuine)"
        ) from None
    except UnidentifiedImageError:
        raise DatasetError(f"{path}: cannot read {what}: not an image or corrupt") from None
    except (OSError, SyntaxError, ValueError) as exc:
        # Truncated files raise OSError("image file is truncated ...") on load().
        raise DatasetError(f"{path}: cannot read {what}: corrupt or truncated ({exc})") from None
    return img


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8 ``[H, W, 3]``.

    EXIF orientation is applied; greyscale, palette, RGBA, CMYK and 16-bit images are
    converted (never refused). Missing, unreadable, corrupt or truncated files and
    decompression bombs raise :class:`DatasetError` naming the file.
    """
    path = Path(path)
    img = _open_checked(path, "image")
    try:
        img = ImageOps.exif_transpose(img)
    except Exception as exc:  # noqa: BLE001 - malformed EXIF must not stop training
        logger.warning("%s: ignoring unreadable EXIF orientation (%s)", path, exc)
    return _to_uint8_rgb(img)


def image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of an image as :func:`read_image` returns it, from its header only."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: image file not found")
    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = img.getexif().get(0x0112, 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read image: not an image or corrupt ({exc})") from None
    # EXIF orientations 5-8 rotate by 90 degrees, so exif_transpose swaps the sides.
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return height, width


def _rgb_mask_to_indices(rgb: np.ndarray, path: Path) -> np.ndarray:
    """Map a colour-coded mask saved as RGB back to label indices through the VOC palette."""
    code = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    pal = voc_palette().astype(np.int32)
    pal_code = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
    colours, inverse = np.unique(code, return_inverse=True)
    lookup = {int(c): i for i, c in enumerate(pal_code)}
    labels = np.array([lookup.get(int(c), -1) for c in colours], dtype=np.int64)
    if (labels < 0).any():
        bad = [f"#{int(c):06x}" for c in colours[labels < 0][:5]]
        raise DatasetError(
            f"{path}: RGB mask has colours that are not in the VOC palette ({', '.join(bad)}); "
            "save masks as palette ('P') or greyscale ('L') PNGs of class indices"
        )
    return labels[inverse.reshape(code.shape)].astype(np.uint8)


def read_mask(
    path: str | Path,
    num_classes: int | None = None,
    expected_size: tuple[int, int] | None = None,
    image_path: str | Path | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> np.ndarray:
    """Read a label PNG as uint8 indices ``[H, W]``.

    Palette ('P') and greyscale ('L') PNGs give their indices directly; RGB masks are
    decoded through the VOC palette. When ``expected_size`` (height, width) is given the
    mask must match it (the error names ``image_path`` too). When ``num_classes`` (C) is
    given, ids must lie in ``0..C`` or equal ``ignore_index``.
    """
    path = Path(path)
    img = _open_checked(path, "mask")
    if img.mode in ("P", "L", "1"):
        mask = np.asarray(img).astype(np.uint8)
    elif img.mode.startswith("I"):
        raw = np.asarray(img)
        if raw.size and (raw.min() < 0 or raw.max() > 255):
            raise DatasetError(
                f"{path}: mask values {int(raw.min())}..{int(raw.max())} do not fit label ids 0..255"
            )
        mask = raw.astype(np.uint8)
    elif img.mode in ("RGB", "RGBA"):
        mask = _rgb_mask_to_indices(np.asarray(img.convert("RGB")), path)
    else:
        raise DatasetError(f"{path}: unsupported mask mode '{img.mode}' (use a P or L PNG)")
    if expected_size is not None and tuple(mask.shape) != tuple(expected_size):
        other = f"its image {image_path}" if image_path is not None else "its image"
        raise DatasetError(
            f"{path}: mask size {mask.shape[1]}x{mask.shape[0]} differs from {other} "
            f"({expected_size[1]}x{expected_size[0]}, width x height)"
        )
    if num_classes is not None:
        check_label_ids(mask, num_classes, str(path), ignore_index)
    return mask


def check_label_ids(
    mask: np.ndarray, num_classes: int, where: str, ignore_index: int = 255
) -> None:
    """Raise DatasetError when ``mask`` holds ids outside ``0..num_classes`` and not ignore."""
    present = np.unique(mask)
    bad = present[(present > num_classes) & (present != ignore_index)]
    if bad.size:
        raise DatasetError(
            f"{where}: label ids {bad.tolist()} are outside the class list "
            f"(0..{num_classes}, {ignore_index} = ignore)"
        )


def tags_from_mask(
    mask: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """Multi-hot uint8 ``[C]`` of the foreground classes present in ``mask``."""
    present = np.unique(mask)
    present = present[(present >= 1) & (present <= num_classes) & (present != ignore_index)]
    tags = np.zeros(num_classes, dtype=np.uint8)
    tags[present.astype(np.int64) - 1] = 1
    return tags


def read_class_file(path: str | Path) -> list[str]:
    """Read a class list (one name per line); returns names with background first.

    The first line should name the background (``background``); a file that lists only the
    foreground classes gets ``background`` prepended. Blank lines and ``#`` comments are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: class list file not found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read class list ({exc})") from None
    names = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    if not names:
        raise DatasetError(f"{path}: class list is empty")
    if names[0].lower() not in BACKGROUND_NAMES:
        names = ["background", *names]
    if len(names) < 2:
        raise DatasetError(f"{path}: class list has no foreground class")
    if len(names) > 256:
        raise DatasetError(f"{path}: {len(names) - 1} classes do not fit uint8 masks (max 254)")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DatasetError(f"{path}: duplicate class names {dup}")
    return names


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
