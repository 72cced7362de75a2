"""Datasets and loaders from the ``data`` config section (see base.yaml)."""

from __future__ import annotations

import functools
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Sampler

from dscnet.data.base import (
    VOC_CLASSES,
    TransformedDataset,
    WSSSDataset,
    drop_untagged,
    read_class_file,
)
from dscnet.data.samplers import GroupBatchSampler
from dscnet.data.synth import SyntheticDataset, SynthSpec
from dscnet.data.transforms import EvalTransform, TrainTransform, pad_collate
from dscnet.errors import ConfigError, DatasetError
from dscnet.utils.seed import worker_init_fn

DATA_TYPES = ("synth", "synth_photo", "voc", "coco", "folder")


def synth_spec(cfg: DictConfig) -> SynthSpec:
    """The synthetic benchmark's spec; ``data.type=synth_photo`` forces photo backgrounds."""
    photo = True if cfg.data.type == "synth_photo" else None
    return SynthSpec.from_config(cfg.data.synth, photo_backgrounds=photo)


@functools.lru_cache(maxsize=4)
def _synthetic(spec: SynthSpec, split: str) -> SyntheticDataset:
    # Train and eval views of a split share one generated copy (a few seconds to make).
    return SyntheticDataset(spec, split)


def _require_root(cfg: DictConfig) -> str:
    root = cfg.data.root
    if root in (None, ""):
        raise ConfigError(f"data.type={cfg.data.type} needs data.root (the dataset folder)")
    return str(root)


def _coco_files(cfg: DictConfig, split: str) -> tuple[str, str]:
    coco = cfg.data.coco
    if split in (cfg.data.val_split, "val"):
        return coco.val_images, coco.val_annotations
    if split in (cfg.data.train_split, "train"):
        return coco.train_images, coco.train_annotations
    raise DatasetError(
        f"COCO split '{split}' is unknown: use '{cfg.data.train_split}' (data.coco.train_*) "
        f"or '{cfg.data.val_split}' (data.coco.val_*)"
    )


def build_base_dataset(cfg: DictConfig, split: str) -> WSSSDataset:
    """The untransformed dataset of ``split`` for ``data.type``."""
    kind = cfg.data.type
    if kind in ("synth", "synth_photo"):
        return _synthetic(synth_spec(cfg), split)
    if kind == "voc":
        from dscnet.data.voc import VOCDataset

        return VOCDataset(
            _require_root(cfg), split, mask_dir=cfg.data.voc.mask_dir,
            labels_file=cfg.data.voc.labels_file, ignore_index=int(cfg.data.ignore_index),
        )  # fmt: skip
    if kind == "coco":
        from dscnet.data.coco import COCODataset

        images, annotations = _coco_files(cfg, split)
        return COCODataset(_require_root(cfg), split, images, annotations)
    if kind == "folder":
        from dscnet.data.folder import FolderDataset

        # A folder has no splits: every split is the whole folder (it has no masks to score).
        f = cfg.data.folder
        return FolderDataset(_require_root(cfg), f.image_dir, f.tags_file, f.class_file)
    raise ConfigError(f"data.type '{kind}' is unknown (choose one of {', '.join(DATA_TYPES)})")


def build_train_transform(cfg: DictConfig) -> TrainTransform:
    aug = cfg.data.train_aug
    return TrainTransform(
        crop_size=int(aug.crop_size),
        scale_range=tuple(aug.scale_range),
        hflip=bool(aug.hflip),
        color_jitter=float(aug.color_jitter),
        mean=tuple(cfg.data.mean),
        std=tuple(cfg.data.std),
        ignore_index=int(cfg.data.ignore_index),
    )


def build_eval_transform(cfg: DictConfig) -> EvalTransform:
    return EvalTransform(mean=tuple(cfg.data.mean), std=tuple(cfg.data.std))


def build_dataset(cfg: DictConfig, split: str, train: bool) -> TransformedDataset:
    """Dataset of ``split`` as tensors.

    ``train=True``: training augmentation, and images without tags are dropped (one
    counted warning). ``train=False``: evaluation transform, every image kept.
    """
    base = build_base_dataset(cfg, split)
    if train:
        return TransformedDataset(
            drop_untagged(base), build_train_transform(cfg), int(cfg.data.ignore_index)
        )
    return TransformedDataset(base, build_eval_transform(cfg), int(cfg.data.ignore_index))


def class_names(cfg: DictConfig) -> list[str]:
    """Class names (background first) of the configured dataset, read cheaply when possible."""
    kind = cfg.data.type
    if kind in ("synth", "synth_photo"):
        return synth_spec(cfg).class_names
    if kind == "voc":
        from pathlib import Path

        class_file = Path(_require_root(cfg)).expanduser() / "classes.txt"
        return read_class_file(class_file) if class_file.is_file() else list(VOC_CLASSES)
    if kind == "folder" and cfg.data.folder.class_file:
        from pathlib import Path

        path = Path(cfg.data.folder.class_file).expanduser()
        return read_class_file(path if path.is_absolute() else Path(_require_root(cfg)) / path)
    return build_base_dataset(cfg, cfg.data.train_split).class_names


def num_classes(cfg: DictConfig) -> int:
    """Number of foreground classes C of the configured dataset."""
    return len(class_names(cfg)) - 1


def build_train_loader(
    cfg: DictConfig,
    dataset: TransformedDataset,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> DataLoader:
    """Infinite loader of G groups x K images per rank (``data.sampler``).

    Each sample's augmentation seed derives from (experiment.seed, step, position in the
    global batch), so batches do not depend on ``num_workers`` and the union over DDP
    ranks equals the single-process batch of ``world_size * G`` groups. Resume with
    ``loader.batch_sampler.set_step(steps_consumed)`` before iterating. ``pin_memory``
    (for a CUDA device) makes the batches' ``.to(device, non_blocking=True)`` asynchronous.
    """
    seed = int(cfg.experiment.seed)
    sampler = GroupBatchSampler(
        dataset.tags,
        groups_per_batch=int(cfg.data.sampler.groups_per_batch),
        group_size=int(cfg.data.sampler.group_size),
        seed=seed,
        rank=rank,
        world_size=world_size,
        class_sampling=str(OmegaConf.select(cfg, "data.sampler.class_sampling", default="uniform")),
        with_seeds=True,
    )
    workers = int(cfg.data.num_workers)
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        worker_init_fn=worker_init_fn,
        generator=torch.Generator().manual_seed(seed + rank),
        persistent_workers=workers > 0,
        pin_memory=pin_memory,
    )


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world_size, ...``: every item on exactly one rank, none twice.

    (``DistributedSampler`` pads with duplicates, which would bias a confusion matrix.)
    """

    def __init__(self, length: int, rank: int = 0, world_size: int = 1) -> None:
        self.length, self.rank, self.world_size = length, rank, world_size

    def __iter__(self) -> Any:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))


def build_eval_loader(
    cfg: DictConfig,
    dataset: TransformedDataset,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> DataLoader:
    """Ordered loader of ``eval.batch_size`` images, sharded over ranks without duplicates.

    Images of different sizes are padded to the batch's largest (``pad_collate``): crop
    predictions back with ``batch["size"]`` or score only where ``batch["valid"]``
    (padding has mask 255, so a confusion matrix that skips 255 needs no cropping).
    ``pin_memory``: page-locked batches, for a CUDA device.
    """
    workers = int(cfg.data.num_workers)
    return DataLoader(
        dataset,
        batch_size=int(cfg.eval.batch_size),
        sampler=ShardSampler(len(dataset), rank, world_size),
        num_workers=workers,
        worker_init_fn=worker_init_fn,
        collate_fn=functools.partial(pad_collate, ignore_index=int(cfg.data.ignore_index)),
        # Its own generator: creating the iterator would otherwise draw the workers' base
        # seed from torch's global generator and shift training's random stream.
        generator=torch.Generator().manual_seed(0),
        pin_memory=pin_memory,
    )
