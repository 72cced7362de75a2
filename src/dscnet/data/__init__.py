"""Datasets, the synthetic benchmark, augmentation, the group sampler and loaders."""

from dscnet.data.base import (
    IGNORE_INDEX,
    VOC_CLASSES,
    SubsetDataset,
    TransformedDataset,
    WSSSDataset,
    drop_untagged,
    tags_from_mask,
)
from dscnet.data.build import (
    build_base_dataset,
    build_dataset,
    build_eval_loader,
    build_eval_transform,
    build_train_loader,
    build_train_transform,
    class_names,
    num_classes,
)
from dscnet.data.coco import COCODataset
from dscnet.data.folder import FolderDataset
from dscnet.data.palette import VOC_PALETTE, colorize, save_palette_png, voc_palette
from dscnet.data.readers import DEFAULT_MAX_PIXELS, read_class_file, read_image, read_mask
from dscnet.data.registry import DatasetSource, dataset_source, list_datasets, register_dataset
from dscnet.data.samplers import GroupBatchSampler
from dscnet.data.synth import (
    SyntheticDataset,
    SynthSpec,
    generate_sample,
    preview_grid,
    synth_spec,
    write_synthetic_voc,
)
from dscnet.data.transforms import EvalTransform, TrainTransform, collate_same_size, denormalize
from dscnet.data.voc import VOCDataset

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IGNORE_INDEX",
    "VOC_PALETTE",
    "VOC_CLASSES",
    "COCODataset",
    "DatasetSource",
    "EvalTransform",
    "FolderDataset",
    "GroupBatchSampler",
    "SubsetDataset",
    "SynthSpec",
    "SyntheticDataset",
    "TrainTransform",
    "TransformedDataset",
    "VOCDataset",
    "WSSSDataset",
    "build_base_dataset",
    "build_dataset",
    "build_eval_loader",
    "build_eval_transform",
    "build_train_loader",
    "build_train_transform",
    "class_names",
    "dataset_source",
    "collate_same_size",
    "colorize",
    "denormalize",
    "drop_untagged",
    "generate_sample",
    "list_datasets",
    "num_classes",
    "preview_grid",
    "read_class_file",
    "read_image",
    "read_mask",
    "register_dataset",
    "synth_spec",
    "tags_from_mask",
    "save_palette_png",
    "voc_palette",
    "write_synthetic_voc",
]
