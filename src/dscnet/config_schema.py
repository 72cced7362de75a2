"""The typed schema of every dscnet config key: type, default, range or choices.

One dataclass per config section; :class:`DscnetConfig` is the whole config. The loader
(:func:`dscnet.config.load_config`) starts from ``OmegaConf.structured(DscnetConfig)`` and merges
the YAML files and the overrides into it, so OmegaConf enforces the types (``train.max_steps=abc``
fails) and refuses unknown keys; then :func:`validate` checks the ranges and choices declared
with :func:`setting`. Code that reads a config can therefore trust every value's type: no
``int()``/``float()`` casts and no ``.get(key, default)`` fallbacks are needed.

Adding a key: add a field to its section below, ``name: type = setting(default, ...)``, and the
same key with the same default (and a comment saying what it does) to ``configs/base.yaml``;
``tests/test_config_schema.py`` checks that the two agree. See docs/ARCHITECTURE.md.

``setting(..., shape=True)`` marks keys that change the shapes of the model's or the
objective's parameters: ``dscnet train --resume`` refuses a checkpoint whose value differs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from functools import cache
from typing import Any, get_type_hints

# What dscnet.utils.device.resolve_device accepts: (regular expression, in words).
DEVICE_PATTERN = (r"auto|cpu|mps|cuda(:\d+)?", "auto, cpu, mps, cuda or cuda:N")


def setting(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple[Any, ...] | None = None,
    pattern: tuple[str, str] | None = None,
    length: int | None = None,
    min_length: int | None = None,
    ordered: bool = False,
    shape: bool = False,
) -> Any:
    """A schema field: its default and the checks :func:`validate` runs on its value.

    ``ge``/``gt``/``le``/``lt`` bound a number (each entry of a list); ``choices`` and
    ``pattern`` (``(regular expression the whole string must match, the same in words)``)
    restrict a string;
    ``length``/``min_length`` the number of entries of a list, ``ordered`` requires a list in
    non-decreasing order (``[low, high]``); ``shape=True`` marks a key that changes parameter
    shapes (checked on resume). ``None`` is accepted for ``Optional`` fields and not checked.
    """
    checks = {
        "ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices, "pattern": pattern,
        "length": length, "min_length": min_length, "ordered": ordered or None, "shape": shape or None,
    }  # fmt: skip
    metadata = {k: v for k, v in checks.items() if v is not None}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


# ----------------------------------------------------------------------------- sections
@dataclass
class ExperimentConfig:
    name: str = "dscnet"
    work_dir: str = "runs/${experiment.name}"
    seed: int = setting(0, ge=0)
    deterministic: bool = True
    device: str = setting("auto", pattern=DEVICE_PATTERN)


@dataclass
class SynthConfig:
    # dscnet.data.synth.SynthSpec checks itself against these ranges too (and num_classes
    # against the number of shapes it can draw).
    num_classes: int = setting(8, ge=1, shape=True)
    image_size: int = setting(112, ge=32)
    num_train: int = setting(2000, ge=0)
    num_val: int = setting(300, ge=0)
    seed: int = setting(0, ge=0)
    min_objects: int = setting(1, ge=1)
    max_objects: int = setting(4, ge=1)
    part_scale: float = setting(0.35, ge=0.05, le=0.8)
    cooccurrence: float = setting(0.8, ge=0, le=1)
    clutter: int = setting(3, ge=0)
    decoys: float = setting(0.6, ge=0, le=1)
    object_scale: list[float] = setting([0.14, 0.28], ge=0.02, le=0.5, length=2, ordered=True)
    photo_backgrounds: bool = False

    @staticmethod
    def cross_checks(values: Mapping[str, Any]) -> list[tuple[str, str]]:
        low, high = values.get("min_objects"), values.get("max_objects")
        if low is not None and high is not None and low > high:
            return [("min_objects", f"must not exceed data.synth.max_objects ({high})")]
        return []


@dataclass
class VocConfig:
    labels_file: str | None = "cls_labels.npy"
    mask_dir: str | None = None


@dataclass
class CocoConfig:
    train_images: str = "train2014"
    val_images: str = "val2014"
    train_annotations: str = "annotations/instances_train2014.json"
    val_annotations: str = "annotations/instances_val2014.json"


@dataclass
class FolderConfig:
    image_dir: str = "images"
    tags_file: str = "tags.csv"
    class_file: str | None = None


@dataclass
class TrainAugConfig:
    crop_size: int = setting(112, ge=1)
    scale_range: list[float] = setting([0.75, 1.5], gt=0, length=2, ordered=True)
    hflip: bool = True
    color_jitter: float = setting(0.2, ge=0)


@dataclass
class SamplerConfig:
    groups_per_batch: int = setting(4, ge=1)
    group_size: int = setting(2, ge=1)
    class_sampling: str = setting("uniform", choices=("uniform", "frequency"))


@dataclass
class DataConfig:
    # Any name registered with dscnet.data.registry (plug-ins too): checked when the dataset
    # is built, with the list of known names.
    type: str = "synth"
    root: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    num_workers: int = setting(0, ge=0)
    ignore_index: int = setting(255, ge=0, le=255)
    mean: list[float] = setting([0.485, 0.456, 0.406], length=3)
    std: list[float] = setting([0.229, 0.224, 0.225], gt=0, length=3)
    max_pixels: int | None = setting(None, ge=1)
    pseudo_masks: str | None = None
    pseudo_uncertain: str = setting("ignore", choices=("ignore", "background"))
    synth: SynthConfig = field(default_factory=SynthConfig)
    voc: VocConfig = field(default_factory=VocConfig)
    coco: CocoConfig = field(default_factory=CocoConfig)
    folder: FolderConfig = field(default_factory=FolderConfig)
    train_aug: TrainAugConfig = field(default_factory=TrainAugConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)


@dataclass
class ModelConfig:
    backbone: str = setting("small_cnn", shape=True)
    pretrained: str | None = None
    output_stride: int = setting(8, choices=(8, 14, 16, 32))  # 14: patch-14 ViTs (DINOv2)
    channels_last: bool = False
    pooling: str = setting("gap", choices=("gap", "gmp"))
    decoder: str = setting("aspp", choices=("aspp", "fpn"), shape=True)
    seg_hidden: int = setting(128, ge=1, shape=True)
    proj_dim: int = setting(128, ge=1, shape=True)
    graph_rounds: int = setting(2, ge=0, shape=True)
    bg_node: bool = True
    node_exclude_padding: bool = False
    node_weights: str = setting("cam", choices=("cam", "pseudo"))
    freeze_backbone: bool = False
    freeze_levels: int = setting(0, ge=0)


@dataclass
class ParConfig:
    enabled: bool = True
    dilations: list[int] = setting([1, 2, 4, 8, 12, 24], ge=1, min_length=1)
    num_iter: int = setting(10, ge=0)
    scale: float = setting(0.5, gt=0, le=1)
    pos_weight: float = setting(0.01, ge=0)
    sigma_rgb: float = setting(0.3, gt=0)
    sigma_pos: float = setting(1.0, gt=0)


@dataclass
class CamConfig:
    bg_threshold: float = setting(0.45, ge=0, le=1)
    low: float | None = setting(0.35, ge=0, le=1)
    high: float | None = setting(0.55, ge=0, le=1)
    online_scales: list[float] = setting([1.0], gt=0, min_length=1)
    online_flip: bool = False
    export_scales: list[float] = setting([1.0, 0.5, 1.5], gt=0, min_length=1)
    export_flip: bool = True
    upsample: str = setting("nearest", choices=("nearest", "bilinear"))
    par: ParConfig = field(default_factory=ParConfig)

    @staticmethod
    def cross_checks(values: Mapping[str, Any]) -> list[tuple[str, str]]:
        low, high = values.get("low"), values.get("high")
        if low is not None and high is not None and low > high:
            return [("low", f"must not exceed cam.high ({high})")]
        return []


@dataclass
class SegLossConfig:
    weight: float = setting(0.1, ge=0)
    balanced: bool = False


@dataclass
class PgclConfig:
    enabled: bool = setting(False, shape=True)
    weight: float = setting(0.1, ge=0)
    temperature: float = setting(0.1, gt=0)
    max_anchors: int = setting(1024, ge=1)
    memory_size: int = setting(256, ge=0, shape=True)


@dataclass
class SgclConfig:
    enabled: bool = setting(False, shape=True)
    weight: float = setting(0.1, ge=0)
    temperature: float = setting(0.1, gt=0)
    memory: str = setting("queue", choices=("queue", "prototype"), shape=True)
    memory_size: int = setting(64, ge=0, shape=True)
    momentum: float = setting(0.9, ge=0, le=1)


@dataclass
class CrossConfig:
    enabled: bool = setting(False, shape=True)
    weight: float = setting(0.05, ge=0)
    temperature: float = setting(0.1, gt=0)
    max_anchors: int = setting(1024, ge=1)


@dataclass
class LossConfig:
    seg: SegLossConfig = field(default_factory=SegLossConfig)
    pgcl: PgclConfig = field(default_factory=PgclConfig)
    sgcl: SgclConfig = field(default_factory=SgclConfig)
    cross: CrossConfig = field(default_factory=CrossConfig)
    contrast_start_step: int = setting(2000, ge=0)
    contrast_ramp_steps: int = setting(0, ge=0)


@dataclass
class OptimConfig:
    lr: float = setting(6.0e-5, ge=0)  # 0 is allowed: a frozen run (tests, health checks)
    head_lr_mult: float = setting(10.0, gt=0)
    weight_decay: float = setting(0.01, ge=0)
    betas: list[float] = setting([0.9, 0.999], ge=0, lt=1, length=2)
    warmup_steps: int = setting(0, ge=0)
    poly_power: float = setting(0.9, ge=0)


@dataclass
class HealthConfig:
    enabled: bool = True
    window: int = setting(50, ge=1)
    warmup_steps: int | None = setting(None, ge=0)
    cls_loss_ratio: float = setting(0.95, gt=0)
    min_f1: float = setting(0.1, ge=0, le=1)
    min_fg_share: float = setting(0.01, ge=0, le=1)
    max_ignore_share: float = setting(0.95, ge=0, le=1)
    dominance_ratio: float = setting(100.0, gt=0)
    eval_fg_ratio: float = setting(0.1, ge=0, le=1)


@dataclass
class TrainConfig:
    supervision: str = setting("weak", choices=("weak", "full"))
    max_steps: int = setting(20000, ge=0)
    cls_warmup_steps: int = setting(2000, ge=0)
    grad_accum: int = setting(1, ge=1)
    amp: str = setting("none", choices=("none", "bf16", "fp16"))
    grad_clip: float | None = setting(None, gt=0)
    log_every: int = setting(20, ge=1)
    eval_every: int = setting(2000, ge=1)
    ckpt_every: int = setting(1000, ge=1)
    progress: bool = True
    health: HealthConfig = field(default_factory=HealthConfig)


@dataclass
class CrfConfig:
    iterations: int = setting(10, ge=0)
    pos_xy_std: float = setting(3.0, gt=0)
    pos_weight: float = setting(3.0, ge=0)
    bi_xy_std: float = setting(64.0, gt=0)
    bi_rgb_std: float = setting(5.0, gt=0)
    bi_weight: float = setting(4.0, ge=0)


@dataclass
class EvalConfig:
    batch_size: int = setting(8, ge=1)
    cam_split: str | None = None
    val_subset: int | None = setting(None, ge=1)
    val_subset_seed: int | None = setting(None, ge=0)
    scales: list[float] = setting([1.0], gt=0, min_length=1)
    flip: bool = False
    ms_scales: list[float] = setting([0.5, 0.75, 1.0, 1.25], gt=0, min_length=1)
    crf: CrfConfig = field(default_factory=CrfConfig)


@dataclass
class DscnetConfig:
    """The whole config: one field per top-level section."""

    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    cam: CamConfig = field(default_factory=CamConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


@dataclass
class _Field:
    """A schema field as the validator sees it: dotted key, section class or checks."""

    key: str
    section: type | None
    checks: Mapping[str, Any]


@cache
def _fields(cls: type, prefix: str = "") -> tuple[_Field, ...]:
    hints = get_type_hints(cls)
    out = []
    for f in fields(cls):
        hint = hints[f.name]
        out.append(_Field(f"{prefix}{f.name}", hint if is_dataclass(hint) else None, f.metadata))
    return tuple(out)


def _problem(value: Any, checks: Mapping[str, Any]) -> str | None:
    """What is wrong with ``value`` under ``checks``, or None."""
    if value is None:
        return None
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if "length" in checks and len(items) != checks["length"]:
        return f"must have {checks['length']} entries, has {len(items)}"
    if "min_length" in checks and len(items) < checks["min_length"]:
        return f"must have at least {checks['min_length']} entries"
    for v in items:
        if isinstance(v, float) and not math.isfinite(v):
            return "must be a finite number"
        if "ge" in checks and not v >= checks["ge"]:
            return f"must be >= {checks['ge']}"
        if "gt" in checks and not v > checks["gt"]:
            return f"must be > {checks['gt']}"
        if "le" in checks and not v <= checks["le"]:
            return f"must be <= {checks['le']}"
        if "lt" in checks and not v < checks["lt"]:
            return f"must be < {checks['lt']}"
        if "choices" in checks and v not in checks["choices"]:
            return "must be one of " + ", ".join(map(str, checks["choices"]))
        if "pattern" in checks and not re.fullmatch(checks["pattern"][0], str(v)):
            return f"must be {checks['pattern'][1]}"
    if checks.get("ordered") and items != sorted(items):
        return "must be [low, high] with low <= high"
    return None


def check_section(cls: type, values: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Every problem of ``values`` (a plain, resolved mapping) under section ``cls``,
    as ``"key=value: problem"`` strings (empty when all is well)."""
    problems = []
    for f in _fields(cls, prefix):
        name = f.key.rsplit(".", 1)[-1]
        if name not in values:
            continue
        value = values[name]
        if f.section is not None:
            problems += check_section(f.section, value, f"{f.key}.")
            continue
        problem = _problem(value, f.checks)
        if problem:
            problems.append(f"{f.key}={value!r}: {problem}")
    for name, problem in getattr(cls, "cross_checks", lambda _: [])(values):
        problems.append(f"{prefix}{name}={values[name]!r}: {problem}")
    return problems


def validate(values: Mapping[str, Any]) -> list[str]:
    """Every range/choice problem of a whole resolved config (a plain mapping)."""
    return check_section(DscnetConfig, values)


def shape_keys(cls: type = DscnetConfig, prefix: str = "") -> list[str]:
    """Dotted keys marked ``shape=True``: they change parameter shapes (see the module doc)."""
    keys = []
    for f in _fields(cls, prefix):
        if f.section is not None:
            keys += shape_keys(f.section, f"{f.key}.")
        elif f.checks.get("shape"):
            keys.append(f.key)
    return keys


def defaults() -> dict[str, Any]:
    """The schema's defaults as a plain nested dict (what base.yaml must hold)."""

    def of(cls: type) -> dict[str, Any]:
        out = {}
        for f in fields(cls):
            if f.default is not MISSING:
                out[f.name] = f.default
            else:
                value = f.default_factory()  # type: ignore[misc]
                out[f.name] = of(type(value)) if is_dataclass(value) else value
        return out

    return of(DscnetConfig)
