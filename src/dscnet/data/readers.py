"""Robust readers of the files a dataset is made of: images, label masks, class lists.

Every failure is a :class:`~dscnet.errors.DatasetError` naming the file and the problem
(missing, permission denied, not an image, corrupt or truncated, too large). The one
decompression-bomb guard of dscnet lives here: an image whose header declares more than
``max_pixels`` pixels (default :data:`DEFAULT_MAX_PIXELS`) is refused before a single pixel
is decoded, so a 10 KB file cannot make dscnet allocate gigabytes.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dscnet.data.base import IGNORE_INDEX
from dscnet.data.palette import voc_palette
from dscnet.errors import DatasetError
from dscnet.utils.io import os_reason

logger = logging.getLogger(__name__)

# 40 Mpixel: a 7,300 x 5,480 photo, 120 MB as RGB uint8. Pillow's own limit (89 Mpixel, an
# error only above twice that) lets a 10 KB PNG cost gigabytes once converted and batched.
# Raise it with `dscnet predict --max-pixels N` or the config key data.max_pixels.
DEFAULT_MAX_PIXELS = 40_000_000
# Names of the background entry accepted in class-list files.
BACKGROUND_NAMES = ("background", "_background_", "__background__", "bg")
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


def _bomb_message(path: Path, what: str, detail: str, max_pixels: int) -> str:
    return (
        f"{path}: {what} refused: {detail}, more than the limit of {max_pixels:,} pixels "
        "(decompression-bomb guard); raise it with --max-pixels (predict) or data.max_pixels "
        "if the file is genuine"
    )


@contextlib.contextmanager
def _open_header(path: Path, what: str, max_pixels: int | None) -> Iterator[Image.Image]:
    """Open ``path`` lazily (header only) after the pixel-limit check; errors are DatasetErrors.

    Pillow's own guard is widened to ``max_pixels`` for the call, so that this limit, and only
    this one, decides; its warnings are silenced (the check below replaces them).
    """
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels)
    if not path.is_file():
        reason = "is a folder, not a file" if path.is_dir() else "file not found"
        raise DatasetError(f"{path}: {what} {reason}")
    pil_limit = Image.MAX_IMAGE_PIXELS
    try:
        # Our own file handle: closed once the caller is done, so no handle stays open
        # (multi-frame files would otherwise keep theirs).
        with warnings.catch_warnings(), path.open("rb") as fh:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if pil_limit is not None and limit > pil_limit:
                Image.MAX_IMAGE_PIXELS = limit
            img = Image.open(fh)
            width, height = img.size
            if width * height > limit:
                detail = f"it is {width}x{height} = {width * height:,} pixels"
                raise DatasetError(_bomb_message(path, what, detail, limit))
            yield img
    except Image.DecompressionBombError as exc:
        detail = str(exc).split(" exceeds")[0].lower()  # "image size (N pixels)"
        raise DatasetError(_bomb_message(path, what, detail, limit)) from None
    except UnidentifiedImageError:
        raise DatasetError(f"{path}: cannot read {what}: not an image or corrupt") from None
    except OSError as exc:
        if exc.errno is not None:  # the OS refused the file: permission, I/O error, ...
            raise DatasetError(f"{path}: cannot read {what}: {os_reason(exc)}") from None
        # Pillow raises errno-less OSError("image file is truncated ...") on load().
        raise DatasetError(f"{path}: cannot read {what}: corrupt or truncated ({exc})") from None
    except (SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read {what}: corrupt or truncated ({exc})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = pil_limit


def read_image(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as RGB uint8 ``[H, W, 3]``.

    EXIF orientation is applied; greyscale, palette, RGBA, CMYK and 16-bit images are
    converted (never refused). Missing, unreadable, corrupt or truncated files and images
    above ``max_pixels`` (default :data:`DEFAULT_MAX_PIXELS`, checked from the header before
    decoding) raise :class:`DatasetError` naming the file.
    """
    path = Path(path)
    with _open_header(path, "image", max_pixels) as img:
        img.load()  # only the first frame of a multi-frame file
    try:
        img = ImageOps.exif_transpose(img)
    except Exception as exc:  # noqa: BLE001 - malformed EXIF must not stop training
        logger.warning("%s: ignoring unreadable EXIF orientation (%s)", path, exc)
    return _to_uint8_rgb(img)


def image_size(path: str | Path, max_pixels: int | None = None) -> tuple[int, int]:
    """``(height, width)`` of an image as :func:`read_image` returns it, from its header only."""
    with _open_header(Path(path), "image", max_pixels) as img:
        width, height = img.size
        orientation = img.getexif().get(0x0112, 1)
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
    max_pixels: int | None = None,
) -> np.ndarray:
    """Read a label PNG as uint8 indices ``[H, W]``.

    Palette ('P') and greyscale ('L') PNGs give their indices directly; RGB masks are
    decoded through the VOC palette. When ``expected_size`` (height, width) is given the
    mask must match it (the error names ``image_path`` too). When ``num_classes`` (C) is
    given, ids must lie in ``0..C`` or equal ``ignore_index``. ``max_pixels`` as in
    :func:`read_image`.
    """
    path = Path(path)
    with _open_header(path, "mask", max_pixels) as img:
        img.load()
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
    mask: np.ndarray, num_classes: int, where: str, ignore_index: int = IGNORE_INDEX
) -> None:
    """Raise DatasetError when ``mask`` holds ids outside ``0..num_classes`` and not ignore."""
    present = np.unique(mask)
    bad = present[(present > num_classes) & (present != ignore_index)]
    if bad.size:
        raise DatasetError(
            f"{where}: label ids {bad.tolist()} are outside the class list "
            f"(0..{num_classes}, {ignore_index} = ignore)"
        )


def read_class_file(path: str | Path) -> list[str]:
    """Read a class list (one name per line); returns names with background first.

    The first line should name the background (``background``); a file that lists only the
    foreground classes gets ``background`` prepended. A background name on any other line is
    an error (class ids follow the file's order, and background must be id 0). Blank lines
    and ``#`` comments are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: class list file not found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read class list: {os_reason(exc)}") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: cannot read class list: not UTF-8 text ({exc})") from None
    entries = [
        (n, ln.strip()) for n, ln in enumerate(lines, 1) if ln.strip() and not ln.strip().startswith("#")
    ]
    if not entries:
        raise DatasetError(f"{path}: class list is empty")
    late_bg = [(n, name) for n, name in entries[1:] if name.lower() in BACKGROUND_NAMES]
    if late_bg:
        line, name = late_bg[0]
        raise DatasetError(
            f"{path}:{line}: '{name}' must be the first class (background is id 0): move it to "
            "the top, or drop it (background is then added as id 0)"
        )
    names = [name for _, name in entries]
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
