"""Overlays and example panels: masks over images, CAM heatmaps, one strip per example.

An example strip reads left to right: image | CAM(s) of the tagged classes | pseudo label |
prediction | ground truth, each panel with a small caption, and a colour legend of the classes
that appear. Missing parts (no ground truth, no pseudo label) get a grey "n/a" panel so that
strips of different images line up in a grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from dscnet.data.palette import VOC_PALETTE, colorize
from dscnet.utils.io import atomic_write

ArrayLike = np.ndarray | torch.Tensor

_WHITE = (255, 255, 255)
_NA_GREY = 200
_FONT_SIZE = 11


def _numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def as_rgb_uint8(image: ArrayLike) -> np.ndarray:
    """An image as uint8 ``[H, W, 3]``.

    Accepts ``[H, W]`` grayscale, ``[H, W, 3|4]`` and channel-first ``[3, H, W]`` (e.g. a
    denormalised tensor); float images are taken to be in ``[0, 1]``.
    """
    img = _numpy(image)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3, 4):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] not in (3, 4):
        raise ValueError(f"image must be [H, W], [H, W, 3] or [3, H, W], got shape {img.shape}")
    img = img[..., :3]
    if np.issubdtype(img.dtype, np.floating):
        img = np.clip(np.nan_to_num(img) * 255.0 + 0.5, 0, 255)
    return np.ascontiguousarray(img.astype(np.uint8))


def _resize_map(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float ``[H, W]`` map to ``size`` = (H, W)."""
    if x.shape == size:
        return x
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def overlay_mask(
    image: ArrayLike,
    mask: ArrayLike,
    alpha: float = 0.5,
    palette: np.ndarray = VOC_PALETTE,
) -> np.ndarray:
    """Blend the palette colour of each non-background pixel of ``mask`` over ``image``.

    Background (0) pixels keep the image; ignore (255) pixels get the palette's ignore colour.
    Returns uint8 ``[H, W, 3]``.
    """
    img = as_rgb_uint8(image)
    m = _numpy(mask)
    if m.shape != img.shape[:2]:
        raise ValueError(f"mask shape {m.shape} does not match image size {img.shape[:2]}")
    colour = colorize(m, palette).astype(np.float32)
    fg = (m != 0)[..., None]
    out = np.where(fg, (1.0 - alpha) * img + alpha * colour, img.astype(np.float32))
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def cam_heatmap(image: ArrayLike, cam: ArrayLike, alpha: float = 0.5) -> np.ndarray:
    """Blend a ``jet`` heatmap of ``cam`` (``[h, w]``, values in ``[0, 1]``) over ``image``.

    The CAM is resized bilinearly to the image when its size differs (CAMs live at the
    backbone's stride). Returns uint8 ``[H, W, 3]``.
    """
    from matplotlib import colormaps

    img = as_rgb_uint8(image)
    c = _numpy(cam).astype(np.float32)
    if c.ndim != 2:
        raise ValueError(f"cam must be a 2-D [H, W] map, got shape {c.shape}")
    c = np.clip(np.nan_to_num(_resize_map(c, img.shape[:2])), 0.0, 1.0)
    heat = colormaps["jet"](c)[..., :3] * 255.0
    out = (1.0 - alpha) * img + alpha * heat
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _font(size: int = _FONT_SIZE) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: bitmap default font, no size
        return ImageFont.load_default()


def _fit_text(text: str, width: int, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> str:
    """Shorten ``text`` with '..' until it fits in ``width`` pixels."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "..") > width:
        text = text[:-1]
    return text + ".."


def _resize_panel(rgb: np.ndarray, height: int, nearest: bool) -> np.ndarray:
    h, w = rgb.shape[:2]
    if h == height:
        return rgb
    width = max(1, round(w * height / h))
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(rgb).resize((width, height), resample))


def _na_panel(height: int, width: int, text: str, font) -> np.ndarray:
    img = Image.new("RGB", (width, height), (_NA_GREY,) * 3)
    draw = ImageDraw.Draw(img)
    draw.text(
        (width / 2, height / 2),
        _fit_text(text, width - 4, font),
        fill=(90, 90, 90),
        font=font,
        anchor="mm",
    )
    return np.asarray(img)


def _captioned(panel: np.ndarray, caption: str, font, bar: int) -> Image.Image:
    h, w = panel.shape[:2]
    out = Image.new("RGB", (w, h + bar), _WHITE)
    out.paste(Image.fromarray(panel), (0, bar))
    ImageDraw.Draw(out).text((2, 2), _fit_text(caption, w - 4, font), fill=(0, 0, 0), font=font)
    return out


def _legend(
    ids: Sequence[int], class_names: Sequence[str], width: int, font, bar: int
) -> Image.Image:
    img = Image.new("RGB", (width, bar), _WHITE)
    draw = ImageDraw.Draw(img)
    x, sw = 2, bar - 6
    for i in ids:  # loop over the few classes present, not over pixels
        name = "ignore" if i == 255 else (class_names[i] if i < len(class_names) else str(i))
        need = sw + 4 + int(font.getlength(name)) + 12
        if x + need > width:
            draw.text((x, 2), "..", fill=(0, 0, 0), font=font)
            break
        draw.rectangle(
            [x, 3, x + sw, 3 + sw], fill=tuple(int(v) for v in VOC_PALETTE[i]), outline=(0, 0, 0)
        )
        draw.text((x + sw + 4, 2), name, fill=(0, 0, 0), font=font)
        x += need
    return img


def example_strip(
    image: ArrayLike,
    cams: ArrayLike | None,
    tags: ArrayLike | None,
    pseudo: ArrayLike | None,
    pred: ArrayLike | None,
    truth: ArrayLike | None,
    class_names: Sequence[str],
    *,
    title: str | None = None,
    panel_height: int = 160,
    max_cam_panels: int = 3,
    alpha: float = 0.5,
) -> np.ndarray:
    """One example as an RGB uint8 strip: image | CAMs | pseudo | prediction | truth.

    Args:
        image: the input image (uint8 ``[H, W, 3]`` or see :func:`as_rgb_uint8`).
        cams: ``[C, h, w]`` CAMs over the C foreground classes, any resolution; each shown
            CAM is ReLU'd and divided by its maximum (the usual CAM display).
        tags: multi-hot ``[C]`` image-level tags; one CAM panel per tagged class, or a single
            panel with the maximum over tagged classes when there are more than
            ``max_cam_panels`` tags.
        pseudo, pred, truth: ``[H, W]`` class-id masks (0 = background, 255 = ignore), or
            ``None`` for a grey "n/a" panel.
        class_names: the C + 1 class names, background first.
        title: optional line drawn above the strip (e.g. image id and its mIoU).
        panel_height: every panel is resized to this height (masks with nearest neighbour).
    """
    font = _font()
    bar = _FONT_SIZE + 6
    img = as_rgb_uint8(image)
    h = int(panel_height)
    img_panel = _resize_panel(img, h, nearest=False)
    w = img_panel.shape[1]
    panels: list[tuple[np.ndarray, str]] = [(img_panel, "image")]

    # CAM panels of the tagged classes.
    fg_names = list(class_names[1:])
    if cams is None or tags is None:
        panels.append((_na_panel(h, w, "n/a", font), "CAM"))
    else:
        c = _numpy(cams).astype(np.float32)
        t = _numpy(tags).reshape(-1)
        if c.ndim != 3 or c.shape[0] != t.shape[0]:
            raise ValueError(f"cams {c.shape} must be [C, h, w] with C = len(tags) = {t.shape[0]}")
        tagged = np.flatnonzero(t > 0)
        c = np.maximum(np.nan_to_num(c[tagged]), 0.0)
        peak = c.reshape(len(tagged), -1).max(axis=1, initial=0.0)
        c = c / np.where(peak > 0, peak, 1.0)[:, None, None]
        names = [fg_names[i] if i < len(fg_names) else str(i + 1) for i in tagged]
        if len(tagged) == 0:
            panels.append((_na_panel(h, w, "no tags", font), "CAM"))
        elif len(tagged) <= max_cam_panels:
            panels += [(cam_heatmap(img_panel, ci, alpha), f"CAM {n}") for ci, n in zip(c, names)]
        else:
            panels.append(
                (cam_heatmap(img_panel, c.max(axis=0), alpha), "CAM max " + "+".join(names))
            )

    present: set[int] = set()
    for mask, caption in ((pseudo, "pseudo label"), (pred, "prediction"), (truth, "truth")):
        if mask is None:
            panels.append((_na_panel(h, w, "n/a", font), caption))
            continue
        m = _numpy(mask)
        present.update(int(v) for v in np.unique(m))
        panels.append((_resize_panel(colorize(m), h, nearest=True), caption))

    gap = 4
    tiles = [_captioned(p, cap, font, bar) for p, cap in panels]
    width = sum(t.width for t in tiles) + gap * (len(tiles) - 1)
    top = bar if title else 0
    strip = Image.new("RGB", (width, top + h + bar + bar), _WHITE)
    if title:
        ImageDraw.Draw(strip).text(
            (2, 2), _fit_text(title, width - 4, font), fill=(0, 0, 0), font=font
        )
    x = 0
    for tile in tiles:
        strip.paste(tile, (x, top))
        x += tile.width + gap
    strip.paste(_legend(sorted(present), class_names, width, font, bar), (0, top + h + bar))
    return np.asarray(strip)


def make_grid(strips: Sequence[ArrayLike], gap: int = 8) -> np.ndarray:
    """Stack strips vertically (narrower ones padded with white on the right)."""
    if not strips:
        raise ValueError("make_grid needs at least one strip")
    arrays = [as_rgb_uint8(s) for s in strips]
    width = max(a.shape[1] for a in arrays)
    height = sum(a.shape[0] for a in arrays) + gap * (len(arrays) - 1)
    grid = np.full((height, width, 3), 255, dtype=np.uint8)
    y = 0
    for a in arrays:
        grid[y : y + a.shape[0], : a.shape[1]] = a
        y += a.shape[0] + gap
    return grid


def save_grid(strips: Sequence[ArrayLike], path: str | Path, gap: int = 8) -> Path:
    """Save :func:`make_grid` of ``strips`` as a PNG, atomically; returns the path."""
    img = Image.fromarray(make_grid(strips, gap))
    return atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))
