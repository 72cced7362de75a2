"""The built-in synthetic WSSS benchmark: seeded multi-label scenes with pixel ground truth.

Scenes are built to show the failure modes WSSS methods exist to fix (docs/SYNTH.md):

- *partial activation*: every object is a large body plus a small, class-discriminative
  part (a mark of a fixed colour and shape). Body colours are shared by pairs of classes
  and class bodies without their part also occur as unlabelled *decoys*, so the part is
  the one reliable cue and a CAM trained on tags alone tends to fire on it only;
- *co-occurrence*: each class has a home background (a texture, or a photograph with
  ``photo_backgrounds``) that it sits on with probability ``cooccurrence``, so CAMs leak
  onto it;
- *clutter and occlusion*: 0..``clutter`` distractor shapes (ground truth background), some
  in front of the objects, 1-4 objects that may occlude each other, repeated classes,
  varied scale, rotation and colour.

Image ``index`` of split ``split`` depends only on ``(seed, split, index)``: any image can
be regenerated alone, identically in any process.
"""

from __future__ import annotations

import functools
import json
import math
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig
from PIL import Image, ImageDraw

from dscnet.config_schema import SynthConfig, check_section
from dscnet.data.base import WSSSDataset, tags_from_mask
from dscnet.data.palette import colorize, voc_palette
from dscnet.data.registry import register_dataset
from dscnet.data.synth_draw import (
    DISTRACTOR_SHAPES,
    PHOTOS,
    SHAPES,
    TEXTURES,
    coverage,
    grey_bank,
    hsv_to_rgb255,
    noise_bank,
    photo_bank,
    photo_crop,
    shape_sdf,
    texture,
)
from dscnet.errors import ConfigError, DatasetError
from dscnet.utils.io import writing

MAX_CLASSES = len(SHAPES)
# The class-discriminative part of class c: a small mark of a fixed shape and colour.
PART_SHAPES = (
    "square", "disk", "ring", "plus", "twin", "disk", "bar_mark", "triangle", "star", "diamond",
)  # fmt: skip
# Saturated part colours, each chosen to contrast with its own class's body hue family.
PART_COLOURS = np.array(
    [
        (245, 225, 20), (235, 30, 30), (30, 60, 235), (20, 215, 225), (225, 40, 205),
        (250, 250, 250), (30, 205, 40), (250, 135, 10), (12, 12, 12), (90, 30, 160),
    ],
    dtype=np.float32,
)  # fmt: skip
# Body hue families: classes 2f and 2f+1 share FAMILY_HUES[f] (blue, orange, green,
# purple, yellow), so a body's colour alone leaves two candidate classes.
FAMILY_HUES = (0.6, 0.07, 0.33, 0.8, 0.15)
REPEAT_CLASS_PROB = 0.3  # chance that an object repeats a class already in the scene
FRONT_DISTRACTOR_PROB = 0.3  # chance that a distractor is drawn over the objects


@dataclass(frozen=True)
class SynthSpec:
    """Parameters of the benchmark (the ``data.synth`` config section)."""

    num_classes: int = 8
    image_size: int = 112
    num_train: int = 2000
    num_val: int = 300
    seed: int = 0
    min_objects: int = 1
    max_objects: int = 4
    part_scale: float = 0.35
    cooccurrence: float = 0.8
    clutter: int = 3
    decoys: float = 0.6
    photo_backgrounds: bool = False
    object_scale: tuple[float, float] = (0.14, 0.28)  # body radius range / image side

    def __post_init__(self) -> None:
        # The ranges of the data.synth config section, from the one schema.
        problems = check_section(SynthConfig, asdict(self), "data.synth.")
        if self.num_classes > MAX_CLASSES:
            problems.append(f"data.synth.num_classes={self.num_classes}: must be <= {MAX_CLASSES}")
        if problems:
            raise ConfigError("invalid synthetic benchmark: " + "; ".join(problems))

    @classmethod
    def from_config(cls, node: Any, photo_backgrounds: bool | None = None) -> SynthSpec:
        """Build from the ``data.synth`` config node (unknown keys are ignored)."""
        values = {k: node[k] for k in cls.__dataclass_fields__ if k in node}
        if "object_scale" in values:  # a YAML list; the spec must stay hashable
            values["object_scale"] = tuple(values["object_scale"])
        if photo_backgrounds is not None:
            values["photo_backgrounds"] = photo_backgrounds
        return cls(**values)

    @property
    def class_names(self) -> list[str]:
        """``["background", <body shape of class 1>, ...]``."""
        return ["background", *SHAPES[: self.num_classes]]

    @property
    def backgrounds(self) -> tuple[str, ...]:
        """The background kinds: textures, or photo names when ``photo_backgrounds``."""
        return PHOTOS if self.photo_backgrounds else TEXTURES

    def split_size(self, split: str) -> int:
        sizes = {"train": self.num_train, "val": self.num_val}
        if split not in sizes:
            raise DatasetError(
                f"synthetic benchmark has no split '{split}' (available splits: train, val)"
            )
        return sizes[split]


@dataclass
class SynthSample:
    """One generated scene."""

    image: np.ndarray  # uint8 [S, S, 3]
    mask: np.ndarray  # uint8 [S, S], 0 = background, c = class c
    parts: np.ndarray  # uint8 [S, S], class id on visible part pixels, else 0
    meta: dict[str, Any] = field(default_factory=dict)


def home_background(class_index: int) -> int:
    """Index (in ``spec.backgrounds``) of the home background of 0-based class ``class_index``."""
    return class_index


def _split_code(split: str) -> int:
    # crc32, not hash(): str hashes are salted per process, which would break determinism.
    return zlib.crc32(split.encode("utf-8"))


def sample_rng(spec: SynthSpec, split: str, index: int) -> np.random.Generator:
    """The generator of image ``index`` of ``split``: a function of (seed, split, index) only."""
    return np.random.default_rng(np.random.SeedSequence([spec.seed, _split_code(split), index]))


def _body_colour(class_index: int, rng: np.random.Generator) -> np.ndarray:
    # Classes 2f and 2f+1 share a hue family: body colour alone is ambiguous.
    hue = FAMILY_HUES[class_index // 2] + rng.uniform(-0.05, 0.05)
    return hsv_to_rgb255(hue, rng.uniform(0.35, 0.8), rng.uniform(0.45, 0.92))


class _Painter:
    """Paints shapes into an image, its label mask and its part mask, inside bounding boxes."""

    def __init__(self, canvas: np.ndarray, photo: bool, rng: np.random.Generator) -> None:
        self.canvas = canvas
        self.size = canvas.shape[0]
        self.mask = np.zeros((self.size, self.size), dtype=np.uint8)
        self.parts = np.zeros((self.size, self.size), dtype=np.uint8)
        self.photo = photo
        light = rng.uniform(0, 2 * np.pi)  # one light direction per scene
        self.light = (math.sin(light), math.cos(light))
        self.body_texture: np.ndarray | None = None
        if photo:
            materials = grey_bank(self.size)
            grey = photo_crop(materials[int(rng.integers(len(materials)))], self.size, rng)
            self.body_texture = (grey - grey.mean()) / max(float(grey.std()), 1e-3)

    def _box(self, cy: float, cx: float, extent: float):
        s = self.size
        y0, y1 = max(0, int(cy - extent)), min(s, int(math.ceil(cy + extent)) + 1)
        x0, x1 = max(0, int(cx - extent)), min(s, int(math.ceil(cx + extent)) + 1)
        if y0 >= y1 or x0 >= x1:
            return None
        return y0, y1, x0, x1

    def _offsets(self, y0: int, y1: int, x0: int, x1: int, cy: float, cx: float):
        """Pixel-centre offsets from (cy, cx) over a box, as broadcastable float32 grids."""
        dy = np.arange(y0, y1, dtype=np.float32)[:, None] + np.float32(0.5 - cy)
        dx = np.arange(x0, x1, dtype=np.float32)[None, :] + np.float32(0.5 - cx)
        return dy, dx

    def _shade(self, dy: np.ndarray, dx: np.ndarray, r: float, box, strength: float) -> np.ndarray:
        """Shading (and, in photo mode, material texture): photo-like statistics, not flat."""
        ly, lx = self.light
        ramp = (dy * ly + dx * lx) * (1.0 / r)
        if not self.photo:
            return 1.0 + strength * np.clip(ramp, -1.5, 1.5)
        rho2 = (dy * dy + dx * dx) * (1.0 / (r * r))
        shade = np.clip(1.0 + 0.25 * ramp - 0.2 * rho2, 0.45, 1.35)
        return shade * (1.0 + 0.15 * self.body_texture[box])

    def paint(
        self,
        shape: str,
        cy: float,
        cx: float,
        r: float,
        angle: float,
        colour: np.ndarray,
        label: int,
        param: float = 0.0,
        part: tuple[str, float, float, float, np.ndarray] | None = None,
    ) -> int:
        """Paint a shape (label 0 = distractor) and its optional part; return visible part px.

        Later paints overwrite earlier ones in the image, the mask and the part mask
        (occlusion). The part is clipped to its body, so part pixels are body pixels.
        """
        cy, cx, r = float(cy), float(cx), float(r)
        ext = self._box(cy, cx, 1.45 * r + 2)
        if ext is None:
            return 0
        y0, y1, x0, x1 = ext
        box = (slice(y0, y1), slice(x0, x1))
        dy, dx = self._offsets(y0, y1, x0, x1, cy, cx)
        sdf = shape_sdf(shape, dy, dx, r, angle, param)
        alpha = coverage(sdf)
        inside = sdf < 0
        region = self.canvas[box]
        fill = colour * self._shade(dy, dx, r, box, 0.08)[..., None]
        region += alpha[..., None] * (fill - region)
        self.mask[box][inside] = label
        self.parts[box][inside] = 0  # occludes the parts of earlier objects
        if part is None:
            return 0
        p_shape, py, px, pr, p_colour = part
        py, px, pr = float(py), float(px), float(pr)
        pext = self._box(py, px, 1.45 * pr + 2)
        if pext is None:
            return 0
        # The part's own (small) box, intersected with the body's box.
        py0, py1 = max(pext[0], y0), min(pext[1], y1)
        px0, px1 = max(pext[2], x0), min(pext[3], x1)
        if py0 >= py1 or px0 >= px1:
            return 0
        pbox = (slice(py0, py1), slice(px0, px1))
        sub = (slice(py0 - y0, py1 - y0), slice(px0 - x0, px1 - x0))
        pdy, pdx = self._offsets(py0, py1, px0, px1, py, px)
        psdf = shape_sdf(p_shape, pdy, pdx, pr, angle)
        p_alpha = coverage(psdf) * alpha[sub]
        p_in = (psdf < 0) & inside[sub]
        bdy, bdx = self._offsets(py0, py1, px0, px1, cy, cx)
        p_fill = p_colour * self._shade(bdy, bdx, r, pbox, 0.03)[..., None]
        p_region = self.canvas[pbox]
        p_region += p_alpha[..., None] * (p_fill - p_region)
        self.parts[pbox][p_in] = label
        return int(p_in.sum())


def _place(
    rng: np.random.Generator, size: int, r: float, placed: list[tuple[float, float, float]]
) -> tuple[float, float]:
    """A centre for a body of radius ``r`` that overlaps earlier bodies only partially."""
    best, best_gap = (size / 2, size / 2), -np.inf
    for _ in range(12):
        cy, cx = (float(v) for v in rng.uniform(0.55 * r, size - 0.55 * r, size=2))
        gap = min((math.hypot(cy - y, cx - x) - 0.8 * (r + pr) for y, x, pr in placed), default=1.0)
        if gap >= 0:
            return float(cy), float(cx)
        if gap > best_gap:
            best, best_gap = (float(cy), float(cx)), gap
    return best


def _part_position(
    rng: np.random.Generator, shape: str, cy: float, cx: float, r: float, angle: float, pr: float
) -> tuple[float, float]:
    """A part centre well inside the body (the part is also clipped to the body)."""
    best, best_sdf = (cy, cx), np.inf
    for _ in range(12):
        a, d = rng.uniform(0, 2 * np.pi), rng.uniform(0.0, 0.75) * r
        py, px = cy + d * math.sin(a), cx + d * math.cos(a)
        depth = float(shape_sdf(shape, np.float32(py - cy), np.float32(px - cx), r, angle))
        if depth <= -0.6 * pr:
            return py, px
        if depth < best_sdf:
            best, best_sdf = (py, px), depth
    return best


def generate_sample(spec: SynthSpec, split: str, index: int) -> SynthSample:
    """Generate image ``index`` of ``split`` (deterministic in (spec.seed, split, index))."""
    spec.split_size(split)  # validates the split name
    rng = sample_rng(spec, split, index)
    size, n_cls = spec.image_size, spec.num_classes

    n_obj = int(rng.integers(spec.min_objects, spec.max_objects + 1))
    classes: list[int] = []
    for _ in range(n_obj):
        if classes and rng.random() < REPEAT_CLASS_PROB:
            classes.append(classes[int(rng.integers(len(classes)))])
        else:
            classes.append(int(rng.integers(n_cls)))

    # Co-occurrence: with probability `cooccurrence` the scene sits on the home background
    # of one of its classes; otherwise on any background (possibly another class's home).
    n_bg = len(spec.backgrounds)
    present = sorted(set(classes))
    on_home = bool(rng.random() < spec.cooccurrence)
    if on_home:
        bg = home_background(present[int(rng.integers(len(present)))])
    else:
        bg = int(rng.integers(n_bg))
    if spec.photo_backgrounds:
        canvas = photo_crop(photo_bank(size)[bg], size, rng)
        canvas *= rng.uniform(0.85, 1.1, size=3).astype(np.float32)  # white-balance jitter
    else:
        canvas = texture(TEXTURES[bg], size, rng)
    painter = _Painter(np.ascontiguousarray(canvas, dtype=np.float32), spec.photo_backgrounds, rng)

    n_dis = int(rng.integers(0, spec.clutter + 1))
    front = rng.random(n_dis) < FRONT_DISTRACTOR_PROB

    def distractor(small: bool) -> bool:
        r = size * (rng.uniform(0.05, 0.1) if small else rng.uniform(*spec.object_scale))
        cy, cx = (float(v) for v in rng.uniform(0, size, size=2))
        decoy = bool(rng.random() < spec.decoys)
        if decoy:
            # A class's body, in its colour family, but without the part: ground truth
            # background. The body alone is thus no proof of the class; only the part is.
            k = int(rng.integers(n_cls))
            shape, colour = SHAPES[k], _body_colour(k, rng)
        else:
            shape = DISTRACTOR_SHAPES[int(rng.integers(len(DISTRACTOR_SHAPES)))]
            colour = hsv_to_rgb255(rng.random(), rng.uniform(0.1, 0.7), rng.uniform(0.3, 0.95))
        painter.paint(shape, cy, cx, r, rng.uniform(0, 2 * np.pi), colour, 0, rng.random())
        return decoy

    decoys = sum(distractor(small=False) for _ in range(int((~front).sum())))

    objects, placed = [], []
    for c in classes:
        shape = SHAPES[c]
        r = size * rng.uniform(*spec.object_scale)
        cy, cx = _place(rng, size, r, placed)
        placed.append((cy, cx, r))
        angle = rng.uniform(0, 2 * np.pi)
        pr = spec.part_scale * r
        py, px = _part_position(rng, shape, cy, cx, r, angle, pr)
        p_colour = np.clip(PART_COLOURS[c] + rng.uniform(-12, 12, 3).astype(np.float32), 0, 255)
        part_px = painter.paint(
            shape, cy, cx, r, angle, _body_colour(c, rng), c + 1,
            part=(PART_SHAPES[c], py, px, pr, p_colour),
        )  # fmt: skip
        objects.append(
            {"label": c + 1, "shape": shape, "center": (cy, cx), "radius": r,
             "part_center": (py, px), "part_radius": pr, "part_pixels_drawn": part_px}
        )  # fmt: skip

    decoys += sum(distractor(small=True) for _ in range(int(front.sum())))

    noise = np.float32(5.0 if spec.photo_backgrounds else 3.0)
    img = painter.canvas
    oy, ox = (int(v) for v in rng.integers(0, size, 2))
    img += noise * noise_bank(size)[oy : oy + size, ox : ox + size]
    img += np.float32(0.5)  # round to nearest on the uint8 cast below
    image = np.clip(img, 0, 255, out=img).astype(np.uint8)
    meta = {
        "background": bg,
        "background_name": spec.backgrounds[bg],
        "on_home": on_home,
        "objects": objects,
        "num_distractors": n_dis,
        "num_decoys": int(decoys),
    }
    return SynthSample(image, painter.mask, painter.parts, meta)


class SyntheticDataset(WSSSDataset):
    """A split of the synthetic benchmark, generated in memory (nothing written to disk).

    All images are generated at construction (tags come from the rendered masks; 2,300
    images at 112 px take a few seconds). With ``cache=True`` (default) the pixels are kept
    in two contiguous arrays, shared copy-on-write by forked DataLoader workers; with
    ``cache=False`` only the tags are kept and images are regenerated on demand.
    """

    def __init__(self, spec: SynthSpec, split: str, cache: bool = True) -> None:
        n = spec.split_size(split)
        self.spec, self.split, self.cache = spec, split, cache
        self.ids = [f"{split}_{i:05d}" for i in range(n)]
        self.class_names = spec.class_names
        self.has_masks = True
        self.source = f"synthetic benchmark split '{split}' (seed {spec.seed})"
        size = spec.image_size
        self.tags = np.zeros((n, spec.num_classes), dtype=np.uint8)
        self.backgrounds = np.zeros(n, dtype=np.int64)
        self._images = np.zeros((n, size, size, 3), dtype=np.uint8) if cache else None
        self._masks = np.zeros((n, size, size), dtype=np.uint8) if cache else None
        for i in range(n):
            sample = generate_sample(spec, split, i)
            self.tags[i] = tags_from_mask(sample.mask, spec.num_classes)
            self.backgrounds[i] = sample.meta["background"]
            if cache:
                self._images[i] = sample.image
                self._masks[i] = sample.mask
        if cache:
            # Read-only: a transform that writes in place would corrupt the cache.
            self._images.setflags(write=False)
            self._masks.setflags(write=False)

    def sample(self, index: int) -> SynthSample:
        """Regenerate item ``index`` with its part mask and metadata."""
        return generate_sample(self.spec, self.split, index)

    def load_image(self, index: int) -> np.ndarray:
        if self._images is not None:
            return self._images[index]
        return self.sample(index).image

    def load_mask(self, index: int) -> np.ndarray:
        if self._masks is not None:
            return self._masks[index]
        return self.sample(index).mask

    def describe(self, index: int) -> str:
        return f"{self.source} image {self.ids[index]}"


def write_synthetic_voc(
    out_dir: str | Path, spec: SynthSpec, splits: tuple[str, ...] = ("train", "val")
) -> Path:
    """Write the benchmark in the PASCAL VOC layout that :class:`VOCDataset` reads.

    ``JPEGImages/<id>.png`` (PNG, lossless: JPEG artefacts would blur the thin parts),
    ``SegmentationClass/<id>.png`` (palette PNGs), ``ImageSets/Segmentation/<split>.txt``,
    ``classes.txt`` (background first), ``cls_labels.npy`` (dict id -> float32 multi-hot
    ``[C]``, the field's format) and ``synth_spec.json`` (the generator's parameters).
    """
    out = Path(out_dir)
    with writing(out):  # a full disk or a file in the way: an OutputError naming the path
        img_dir, mask_dir = out / "JPEGImages", out / "SegmentationClass"
        set_dir = out / "ImageSets" / "Segmentation"
        for d in (img_dir, mask_dir, set_dir):
            d.mkdir(parents=True, exist_ok=True)
        palette = voc_palette().reshape(-1).tolist()
        labels: dict[str, np.ndarray] = {}
        for split in splits:
            ids = []
            for i in range(spec.split_size(split)):
                sample = generate_sample(spec, split, i)
                sid = f"{split}_{i:05d}"
                ids.append(sid)
                Image.fromarray(sample.image).save(img_dir / f"{sid}.png")
                h, w = sample.mask.shape
                mask_img = Image.frombytes("P", (w, h), np.ascontiguousarray(sample.mask).tobytes())
                mask_img.putpalette(palette)
                mask_img.save(mask_dir / f"{sid}.png")
                labels[sid] = tags_from_mask(sample.mask, spec.num_classes).astype(np.float32)
            (set_dir / f"{split}.txt").write_text("".join(f"{s}\n" for s in ids))
        (out / "classes.txt").write_text("".join(f"{n}\n" for n in spec.class_names))
        np.save(out / "cls_labels.npy", labels, allow_pickle=True)
        (out / "synth_spec.json").write_text(json.dumps(asdict(spec), indent=2) + "\n")
    return out


def preview_grid(
    dataset: WSSSDataset, n: int, path: str | Path, columns: int = 4, tile: int = 160
) -> Path:
    """Write a PNG of the first ``n`` images, each next to its coloured mask and tag names."""
    n = min(n, len(dataset))
    if n == 0:
        raise DatasetError(f"{dataset.source}: no images to preview")
    columns = max(1, min(columns, n))
    rows = math.ceil(n / columns)
    gap, caption = 4, 14
    cell_w, cell_h = 2 * tile + gap, tile + caption
    sheet = Image.new("RGB", (columns * (cell_w + 2 * gap), rows * (cell_h + gap) + gap), "white")
    draw = ImageDraw.Draw(sheet)
    for k in range(n):
        image, mask = dataset.load_sample(k)
        x = (k % columns) * (cell_w + 2 * gap) + gap
        y = (k // columns) * (cell_h + gap) + gap
        sheet.paste(Image.fromarray(image).resize((tile, tile), Image.BILINEAR), (x, y))
        if mask is not None:
            colour = Image.fromarray(colorize(mask)).resize((tile, tile), Image.NEAREST)
            sheet.paste(colour, (x + tile + gap, y))
        names = [dataset.class_names[c + 1] for c in np.flatnonzero(dataset.tags[k])]
        draw.text((x, y + tile + 1), ", ".join(names) or "(no tags)", fill=(0, 0, 0))
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(path)
    return path


# ----------------------------------------------------------------------------- registration
def synth_spec(cfg: DictConfig) -> SynthSpec:
    """The synthetic benchmark's spec; ``data.type=synth_photo`` forces photo backgrounds."""
    photo = True if cfg.data.type == "synth_photo" else None
    return SynthSpec.from_config(cfg.data.synth, photo_backgrounds=photo)


@functools.lru_cache(maxsize=4)
def _generated(spec: SynthSpec, split: str) -> SyntheticDataset:
    # Train and eval views of a split share one generated copy (a few seconds to make).
    return SyntheticDataset(spec, split)


def _synth_class_names(cfg: DictConfig) -> list[str]:
    return synth_spec(cfg).class_names


@register_dataset("synth", class_names=_synth_class_names)
@register_dataset("synth_photo", class_names=_synth_class_names)
def build_synthetic(cfg: DictConfig, split: str) -> SyntheticDataset:
    """``data.type=synth`` (textures) or ``synth_photo`` (photographs): generated in memory."""
    return _generated(synth_spec(cfg), split)
