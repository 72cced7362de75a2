"""Datasets and loaders from the ``data`` config section (see base.yaml)."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Sampler

from dscnet.data import coco, folder, synth, voc
from dscnet.data.base import TransformedDataset, WSSSDataset, drop_untagged
from dscnet.data.pseudo_masks import MaskFolderDataset
from dscnet.data.registry import dataset_source
from dscnet.data.samplers import GroupBatchSampler
from dscnet.data.transforms import EvalTransform, TrainTransform, collate_same_size
from dscnet.errors import ConfigError
from dscnet.utils.seed import worker_init_fn

# Each module registers its data.type(s) with dscnet.data.registry when imported.
_BUILT_IN = (coco, folder, synth, voc)


def build_base_dataset(cfg: DictConfig, split: str) -> WSSSDataset:
    """The untransformed dataset of ``split`` for ``data.type`` (see :mod:`dscnet.data.registry`)."""
    return dataset_source(cfg.data.type).build(cfg, split)


def build_train_transform(cfg: DictConfig) -> TrainTransform:
    aug = cfg.data.train_aug
    return TrainTransform(
        crop_size=aug.crop_size,
        scale_range=tuple(aug.scale_range),
        hflip=aug.hflip,
        color_jitter=aug.color_jitter,
        mean=tuple(cfg.data.mean),
        std=tuple(cfg.data.std),
        ignore_index=cfg.data.ignore_index,
    )


def build_eval_transform(cfg: DictConfig) -> EvalTransform:
    return EvalTransform(mean=tuple(cfg.data.mean), std=tuple(cfg.data.std))


def build_dataset(cfg: DictConfig, split: str, train: bool) -> TransformedDataset:
    """Dataset of ``split`` as tensors.

    ``train=True``: training augmentation, and images without tags are dropped (one
    counted warning). ``train=False``: evaluation transform, every image kept.
    """
    if train and not cfg.data.pseudo_masks and cfg.data.pseudo_uncertain != "ignore":
        # A second-stage config (real_cpu_stage2) without its labels would train on the
        # true masks and look like a second stage: refuse.
        raise ConfigError(
            f"data.pseudo_uncertain={cfg.data.pseudo_uncertain} is about the labels of "
            "data.pseudo_masks, which is not set: pass the exported labels with "
            "data.pseudo_masks=DIR (dscnet pseudo --out DIR)"
        )
    base = build_base_dataset(cfg, split)
    if train and cfg.data.pseudo_masks:
        # Second stage: the training split's masks are exported pseudo labels.
        base = MaskFolderDataset(
            base, cfg.data.pseudo_masks, cfg.data.ignore_index, uncertain=cfg.data.pseudo_uncertain
        )
    if train:
        return TransformedDataset(
            drop_untagged(base), build_train_transform(cfg), cfg.data.ignore_index
        )
    return TransformedDataset(base, build_eval_transform(cfg), cfg.data.ignore_index)


def class_names(cfg: DictConfig) -> list[str]:
    """Class names (background first) of the configured dataset, read cheaply when possible."""
    return dataset_source(cfg.data.type).class_names(cfg)


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
    seed = cfg.experiment.seed
    sampler = GroupBatchSampler(
        dataset.tags,
        groups_per_batch=cfg.data.sampler.groups_per_batch,
        group_size=cfg.data.sampler.group_size,
        seed=seed,
        rank=rank,
        world_size=world_size,
        class_sampling=str(cfg.data.sampler.class_sampling),
        with_seeds=True,
    )
    workers = cfg.data.num_workers
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

    Each element is a *list* of batches, one per image size among those ``eval.batch_size``
    images (:func:`~dscnet.data.transforms.collate_same_size`): nothing is padded, so every
    score is independent of the batch size and of which images share a batch.
    ``pin_memory``: page-locked batches, for a CUDA device.
    """
    workers = cfg.data.num_workers
    return DataLoader(
        dataset,
        batch_size=cfg.eval.batch_size,
        sampler=ShardSampler(len(dataset), rank, world_size),
        num_workers=workers,
        worker_init_fn=worker_init_fn,
        collate_fn=collate_same_size,
        # Its own generator: creating the iterator would otherwise draw the workers' base
        # seed from torch's global generator and shift training's random stream.
        generator=torch.Generator().manual_seed(0),
        pin_memory=pin_memory,
    )
