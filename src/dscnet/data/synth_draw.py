"""Vectorised drawing primitives of the synthetic benchmark: shapes, textures, photos.

Shapes are approximate signed distance functions (negative inside, in pixels) evaluated
on coordinate grids, so one numpy expression draws a whole shape with anti-aliased edges;
nothing loops over pixels. See docs/SYNTH.md for how the scenes are composed.
"""

from __future__ import annotations

import colorsys
import math
from functools import lru_cache

import numpy as np
from PIL import Image

from dscnet.errors import MissingExtraError

SQRT3 = float(np.sqrt(3.0))

# Body shapes; the first C are the classes' bodies, all of them (plus "bar"/"blob") also
# appear as unlabelled distractors, so a body shape alone does not prove a class.
SHAPES = (
    "disk", "square", "triangle", "ellipse", "cross",
    "ring", "star", "hexagon", "diamond", "crescent",
)  # fmt: skip
DISTRACTOR_SHAPES = (*SHAPES, "bar", "blob")

# Procedural background textures; class c's "home" texture is TEXTURES[c], the rest are
# neutral (they only appear when a scene does not use its classes' homes).
TEXTURES = (
    "hstripes", "vstripes", "checker", "dots", "diagonal", "rings",
    "waves", "crosshatch", "noise", "gradient", "plain", "grain",
)  # fmt: skip

# Photographs bundled with scikit-image that load offline (checked with 0.26). Colour
# photos first, so that they are the homes of the first classes.
PHOTOS = (
    "coffee", "chelsea", "astronaut", "rocket", "hubble_deep_field", "immunohistochemistry",
    "retina", "stereo_motorcycle", "grass", "gravel", "brick", "coins", "camera", "moon",
)  # fmt: skip
# Greyscale material photos used to texture object bodies in photo mode.
BODY_TEXTURES = ("grass", "gravel", "brick", "moon")


def hsv_to_rgb255(h: float, s: float, v: float) -> np.ndarray:
    """One HSV colour (all in [0, 1], hue wraps) as float32 RGB in [0, 255]."""
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255.0


def shape_sdf(
    shape: str, dy: np.ndarray, dx: np.ndarray, r: float, angle: float, param: float = 0.0
) -> np.ndarray:
    """Approximate signed distance (pixels, < 0 inside) of ``shape`` of size ``r``.

    ``dy, dx`` are offsets from the shape's centre (broadcastable arrays), ``angle`` its
    rotation, ``param`` a per-instance shape parameter in [0, 1) (blob lobes' phase).
    Sizes are chosen so that the shapes have comparable areas for the same ``r``.
    """
    # Python floats, not numpy float64 scalars: under NumPy 2 promotion rules a float64
    # scalar would silently turn the float32 grids into float64 (twice the work).
    c, s, r = math.cos(float(angle)), math.sin(float(angle)), float(r)
    u = c * dx + s * dy
    v = -s * dx + c * dy
    au, av = np.abs(u), np.abs(v)
    if shape == "disk":
        return np.sqrt(u * u + v * v) - r
    if shape == "square":
        return np.maximum(au, av) - 0.85 * r
    if shape == "triangle":
        big = 1.3 * r  # circumradius; edges at half of it from the centroid
        return np.maximum(v, au * (SQRT3 / 2) - v / 2) - big / 2
    if shape == "ellipse":
        a, b = 1.3 * r, 0.62 * r
        return (np.sqrt((u / a) ** 2 + (v / b) ** 2) - 1.0) * b
    if shape == "cross":
        w = 0.36 * r
        return np.minimum(np.maximum(au - r, av - w), np.maximum(au - w, av - r))
    if shape == "ring":
        return np.abs(np.sqrt(u * u + v * v) - 0.7 * r) - 0.32 * r
    if shape == "star":
        rho = np.sqrt(u * u + v * v)
        theta = np.arctan2(v, u)
        return (rho - r * (0.72 + 0.38 * np.cos(5 * theta))) * 0.7
    if shape == "hexagon":
        return np.maximum(av, au * (SQRT3 / 2) + av / 2) - 0.9 * r
    if shape == "diamond":
        a, b = 1.2 * r, 0.85 * r
        return (au / a + av / b - 1.0) * (a * b / np.hypot(a, b))
    if shape == "crescent":
        outer = np.sqrt(u * u + v * v) - r
        bite = 0.78 * r - np.sqrt((u - 0.5 * r) ** 2 + v * v)
        return np.maximum(outer, bite)
    if shape == "bar":
        return np.maximum(au - 1.2 * r, av - 0.22 * r)
    if shape == "blob":
        rho = np.sqrt(u * u + v * v)
        theta = np.arctan2(v, u)
        wobble = 0.18 * np.sin(3 * theta + 6.283 * param) + 0.1 * np.cos(2 * theta)
        return (rho - r * (0.9 + wobble)) * 0.85
    if shape == "twin":  # two small dots side by side (a part mark)
        d1 = np.sqrt((u - 0.55 * r) ** 2 + v * v)
        d2 = np.sqrt((u + 0.55 * r) ** 2 + v * v)
        return np.minimum(d1, d2) - 0.5 * r
    if shape == "plus":
        w = 0.3 * r
        return np.minimum(np.maximum(au - r, av - w), np.maximum(au - w, av - r))
    if shape == "bar_mark":
        return np.maximum(au - r, av - 0.4 * r)
    raise ValueError(f"unknown shape {shape!r}")


def coverage(sdf: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] from a signed distance in pixels."""
    return np.clip(0.5 - sdf, 0.0, 1.0)


def _value_noise(size: int, cells: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth random field in [0, 1]: a random ``cells x cells`` grid upsampled bicubically."""
    grid = rng.random((cells, cells), dtype=np.float32)
    up = np.asarray(Image.fromarray(grid).resize((size, size), Image.BICUBIC))
    lo, hi = float(up.min()), float(up.max())
    return (up - lo) / max(hi - lo, 1e-6)


@lru_cache(maxsize=8)
def _axis(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates as a column ``[S, 1]`` and a row ``[1, S]`` (broadcast, not tiled)."""
    ar = np.arange(size, dtype=np.float32)
    yy, xx = ar[:, None].copy(), ar[None, :].copy()
    yy.setflags(write=False)
    xx.setflags(write=False)
    return yy, xx


def _pattern(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """The texture's mixing pattern in [0, 1], broadcastable to ``[S, S]``."""
    yy, xx = _axis(size)
    period = size * rng.uniform(0.07, 0.16)
    phase = rng.uniform(0, 2 * np.pi)
    tau = 2 * np.pi / period
    if kind == "hstripes":
        return (np.sin(yy * tau + phase) > 0).astype(np.float32)
    if kind == "vstripes":
        return (np.sin(xx * tau + phase) > 0).astype(np.float32)
    if kind == "diagonal":
        return (np.sin((xx + yy) * (tau / math.sqrt(2)) + phase) > 0).astype(np.float32)
    if kind == "checker":
        cell = period * 0.75
        return ((np.floor(yy / cell) + np.floor((xx + phase) / cell)) % 2).astype(np.float32)
    if kind == "dots":
        cell = period * 1.1
        gy = (yy % cell) - cell / 2
        gx = ((xx + phase) % cell) - cell / 2
        return coverage(np.sqrt(gy * gy + gx * gx) - cell * 0.28)
    if kind == "rings":
        cy, cx = (float(v) for v in rng.uniform(0, size, 2))
        return 0.5 + 0.5 * np.sin(np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) * tau + phase)
    if kind == "waves":
        return 0.5 + 0.5 * np.sin(xx * tau + 2.5 * np.sin(yy * (tau * 0.5) + phase))
    if kind == "crosshatch":
        a = np.sin((xx + yy) * (tau / math.sqrt(2)) + phase) > 0.6
        b = np.sin((xx - yy) * (tau / math.sqrt(2))) > 0.6
        return (a | b).astype(np.float32)
    if kind == "noise":
        return _value_noise(size, int(rng.integers(4, 9)), rng)
    if kind == "gradient":
        ang = rng.uniform(0, 2 * np.pi)
        g = math.cos(ang) * xx + math.sin(ang) * yy
        return (g - g.min()) / max(float(g.max() - g.min()), 1e-6)
    if kind == "plain":
        return np.zeros((1, 1), dtype=np.float32)
    if kind == "grain":
        return rng.random((size, size), dtype=np.float32)
    raise ValueError(f"unknown texture {kind!r}")


def texture(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A procedural background ``[size, size, 3]`` float32 in [0, 255].

    Two random low-saturation colours are mixed by a pattern in [0, 1] whose period,
    phase and orientation vary per image; the *kind* of pattern is what a class's home
    background has in common across images.
    """
    p = _pattern(kind, size, rng)
    hue = rng.random()
    c1 = hsv_to_rgb255(hue, rng.uniform(0.05, 0.45), rng.uniform(0.35, 0.95))
    c2 = hsv_to_rgb255(
        hue + rng.uniform(-0.3, 0.3), rng.uniform(0.05, 0.45), rng.uniform(0.3, 0.95)
    )
    out = np.empty((size, size, 3), dtype=np.float32)
    out[...] = c1 + (c2 - c1) * p[..., None]
    return out


@lru_cache(maxsize=4)
def noise_bank(size: int) -> np.ndarray:
    """A fixed ``[2S, 2S, 3]`` field of unit Gaussian noise; scenes add random windows of it.

    Drawing fresh noise per image costs as much as the whole scene; a window at a random
    offset of a fixed field is as good for sensor-like noise and still seeded.
    """
    bank = np.random.default_rng(0x6E6F).standard_normal((2 * size, 2 * size, 3), dtype=np.float32)
    bank.setflags(write=False)
    return bank


def _load_skimage_photo(name: str) -> np.ndarray:
    import skimage.data as skdata

    img = getattr(skdata, name)()
    if isinstance(img, tuple):  # stereo_motorcycle -> (left, right, disparity)
        img = img[0]
    img = np.asarray(img)
    if img.dtype != np.uint8:
        img = (np.clip(img.astype(np.float64), 0, 1) * 255).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3])


@lru_cache(maxsize=4)
def photo_bank(size: int) -> tuple[Image.Image, ...]:
    """The :data:`PHOTOS` as RGB PIL images, pre-shrunk so the short side is ~2.5x ``size``.

    Pre-shrinking once makes each random crop cheap to resize to ``size``; greyscale
    photos (grass, brick, ...) come as RGB too.
    """
    try:
        import skimage.data  # noqa: F401
    except ImportError:
        raise MissingExtraError("the real-photo benchmark", "pretrained", "scikit-image") from None
    out = []
    for name in PHOTOS:
        img = Image.fromarray(_load_skimage_photo(name))
        w, h = img.size
        target = 2.5 * size / min(h, w)
        if target < 1.0:
            img = img.resize((round(w * target), round(h * target)), Image.BILINEAR)
        out.append(img)
    return tuple(out)


def photo_crop(photo: Image.Image, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop (40-100% of the short side, random flip) resized to ``size``.

    Returns float32 ``[size, size, C]`` in [0, 255] (C = the image's bands).
    """
    w, h = photo.size
    side = int(round(min(h, w) * rng.uniform(0.4, 1.0)))
    y0 = int(rng.integers(0, h - side + 1))
    x0 = int(rng.integers(0, w - side + 1))
    # resize(box=...) crops and resamples in one pass, without copying the photo.
    out = np.asarray(
        photo.resize((size, size), Image.BILINEAR, box=(x0, y0, x0 + side, y0 + side)),
        dtype=np.float32,
    )
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return out


@lru_cache(maxsize=4)
def grey_bank(size: int) -> tuple[Image.Image, ...]:
    """The :data:`BODY_TEXTURES` photos as greyscale ('L') images, shrunk like :func:`photo_bank`."""
    bank = photo_bank(size)
    return tuple(bank[PHOTOS.index(name)].convert("L") for name in BODY_TEXTURES)
