"""``dscnet pseudo``: pseudo labels for a whole split, as VOC palette PNGs.

For each image: the config's :class:`~dscnet.cam.labeler.PseudoLabeler` (the online rule at
its own working scale, labels brought to the image size; with ``ms`` the CAMs are averaged
over ``cam.export_scales`` and flips), from the image's **ground-truth tags** (the usual protocol for
train-set pseudo labels: WSSS is allowed to use the image-level labels of its training images,
and second-stage segmenters are trained on exactly these), PAR refinement and the
background-threshold / uncertain-band rule, optionally a dense CRF. Without ``ms`` and CRF the
exported labels are exactly the online labels ``dscnet eval --what pseudo`` scores. This is *not* segmentation inference, which never
reads tags (see ``dscnet predict`` / ``eval``).

The labels are written as ``<id>.png`` in the VOC format (mode "P", 0 = background,
1..C = classes, 255 = ignore), so any second-stage segmenter reads them like
``SegmentationClassAug``. When the split has masks, they are scored on the fly with the same
accumulator as ``dscnet eval --what pseudo`` and the metrics are returned (and written to
``pseudo_metrics.json``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import Dataset

from dscnet.cam.labeler import build_export_labeler
from dscnet.data.build import build_eval_loader
from dscnet.data.palette import save_palette_png
from dscnet.errors import DatasetError
from dscnet.evaluation.io import to_jsonable
from dscnet.evaluation.score import LabelScore
from dscnet.inference.crf import CrfParams, dense_crf, require_crf
from dscnet.utils.device import resolve_device
from dscnet.utils.progress import progress_iter


def label_path(out_dir: Path, sample_id: str) -> Path:
    """``out_dir / <id>.png``; ids with sub-folders (``a/b``) keep them, escapes are refused."""
    rel = PurePosixPath(str(sample_id).replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise DatasetError(f"sample id {sample_id!r} cannot be used as an output file name")
    return out_dir.joinpath(*rel.parts[:-1], rel.name + ".png")


@torch.no_grad()
def export_pseudo_labels(
    model: nn.Module,
    dataset: Dataset,
    out_dir: str | Path,
    cfg: DictConfig,
    *,
    ms: bool = False,
    scales: Sequence[float] | None = None,
    flip: bool | None = None,
    fill_ignore: bool = False,
    device: str | torch.device | None = None,
    size_divisor: int = 1,
    crf: CrfParams | None = None,
    progress: bool = True,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any] | None:
    """Write pseudo labels ``<id>.png`` for every item of ``dataset``; score them if possible.

    Uses the image's ground-truth tags (the field's protocol for train-set pseudo labels).

    Args:
        model: a model with ``cam(images) -> [B, C, h, w]`` CAM logits.
        dataset: items ``{"image": normalised [3, H, W], "tags": [C], "mask": long [H, W]
            (255 where unknown), "index", "id"}`` (a ``dscnet.data`` TransformedDataset with
            the eval transform, so labels have the original image size).
        out_dir: where the PNGs go (created).
        cfg: the labeler's settings (``cam.*``, ``data.mean/std/ignore_index``) and the
            loader's (``eval.batch_size``, ``data.num_workers``).
        ms: CAMs averaged over ``cam.export_scales`` (+ flips with ``cam.export_flip``)
            instead of the online labels' ``cam.online_scales`` / ``cam.online_flip``.
        scales, flip: override the CAM scales / flip chosen by ``ms``.
        fill_ignore: write uncertain pixels as background (0) instead of 255, for
            second-stage trainers that cannot ignore a label.
        device: None keeps the model's device.
        size_divisor: pad each CAM pass to a multiple of this (1 = no padding).
        crf: dense-CRF parameters: the labels come from the CRF on the refined scores
            (:meth:`PseudoLabeler.crf_labels`) instead of the thresholds alone.
        progress: show a progress bar.
        class_names: background first (default ``dataset.class_names``); stored with the
            metrics.

    Returns:
        None when no item has a mask; otherwise the metrics of ``dscnet eval --what pseudo``
        (``miou`` with uncertain pixels counted as background, comparable with the field's
        pseudo-label mIoU; ``confident_miou``; ``coverage``), plus ``ignore_fraction``
        (``1 - coverage``), ``num_images``, ``class_names`` and ``protocol``.
    """
    if device is not None:
        model.to(resolve_device(str(device)))
    model.eval()
    param = next(model.parameters(), None)
    dev = param.device if param is not None else torch.device("cpu")
    changes: dict[str, Any] = {"size_divisor": size_divisor}
    if scales is not None:
        changes["cam_scales"] = tuple(scales)
    if flip is not None:
        changes["cam_flip"] = bool(flip)
    # The online rule at its own working scale (the thresholds were chosen for it; at scale 1
    # PAR's dilations cover half the image area and B's labels on msrc-dev lose 3.3 points).
    labeler = build_export_labeler(cfg, ms, **changes).to(dev)
    scales, flip = labeler.cam_scales, labeler.cam_flip
    if crf is not None:
        require_crf()  # before the first image, not after a long run
    names = list(class_names) if class_names is not None else list(getattr(dataset, "class_names", []))
    ignore = labeler.ignore_index

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    score: LabelScore | None = None
    num_images = 0
    for groups in progress_iter(build_eval_loader(cfg, dataset), "pseudo labels", enabled=progress):
        for batch in groups:
            images, tags, masks = (batch[k].to(dev) for k in ("image", "tags", "mask"))
            if crf is None:
                labels = labeler(images, tags, model=model)
            else:
                labels = labeler.crf_labels(images, tags, partial(dense_crf, **asdict(crf)), model=model)
            written = labels.masked_fill(labels == ignore, 0) if fill_ignore else labels
            for sample_id, lab in zip(batch["id"], written.cpu()):
                save_palette_png(lab.to(torch.uint8), label_path(out, sample_id))
            num_images += len(batch["id"])
            if bool((masks != ignore).any()):
                if score is None:
                    score = LabelScore(tags.shape[1] + 1, ignore, dev, uncertain=True)
                score.update(labels, masks)

    if score is None:
        return None
    metrics = score.compute()
    metrics.update(
        ignore_fraction=1.0 - metrics["coverage"],
        num_images=num_images,
        class_names=names,
        protocol=(
            f"pseudo labels from CAMs with ground-truth tags, scales={list(scales)}, flip={flip}, "
            f"working scale={labeler.scale:g}, thresholds={labeler.thresholds}, "
            f"PAR={'on' if labeler.par is not None else 'off'}, CRF={'on' if crf is not None else 'off'}; "
            "uncertain pixels counted as background"
        ),
    )
    (out / "pseudo_metrics.json").write_text(json.dumps(to_jsonable(metrics), indent=2))
    return metrics
