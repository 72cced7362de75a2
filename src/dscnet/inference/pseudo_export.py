"""``dscnet pseudo``: pseudo labels for a whole split, as VOC palette PNGs.

For each image: multi-scale (+ flip) CAMs of the image's **ground-truth tags** (the usual
protocol for train-set pseudo labels: WSSS is allowed to use the image-level labels of its
training images, and second-stage segmenters are trained on exactly these), PAR refinement
and the background-threshold / uncertain-band rule of :func:`make_pseudo_labels`. This is
*not* segmentation inference, which never reads tags (see ``dscnet predict`` / ``eval``).

The labels are written as ``<id>.png`` in the VOC format (mode "P", 0 = background,
1..C = classes, 255 = ignore), so any second-stage segmenter reads them like
``SegmentationClassAug``. When the split has masks, the confusion matrix is accumulated on
the fly and the pseudo labels' mIoU is returned (and written to ``pseudo_metrics.json``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, Dataset

from dscnet.errors import DatasetError
from dscnet.inference.multiscale import cam_maps
from dscnet.utils.device import resolve_device


def _as_list(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Module-level (picklable) collate: items of different sizes are grouped later.
    return batch


def _same_size_runs(items: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    run: list[dict[str, Any]] = []
    for item in items:
        if run and run[0]["image"].shape != item["image"].shape:
            yield run
            run = []
        run.append(item)
    if run:
        yield run


def label_path(out_dir: Path, sample_id: str) -> Path:
    """``out_dir / <id>.png``; ids with sub-folders (``a/b``) keep them, escapes are refused."""
    rel = PurePosixPath(str(sample_id).replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise DatasetError(f"sample id {sample_id!r} cannot be used as an output file name")
    return out_dir.joinpath(*rel.parts[:-1], rel.name + ".png")


def _build_par(cfg: DictConfig) -> nn.Module | None:
    par_cfg = cfg.cam.par
    if not bool(par_cfg.enabled):
        return None
    from dscnet.cam.par import PAR

    return PAR(
        dilations=list(par_cfg.dilations),
        num_iter=int(par_cfg.num_iter),
        sigma_rgb=float(par_cfg.sigma_rgb),
        sigma_pos=float(par_cfg.sigma_pos),
        pos_weight=float(par_cfg.pos_weight),
    )


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    return value


@torch.no_grad()
def export_pseudo_labels(
    model: nn.Module,
    dataset: Dataset,
    out_dir: str | Path,
    cfg: DictConfig,
    *,
    scales: Sequence[float] | None = None,
    flip: bool | None = None,
    fill_ignore: bool = False,
    device: str | torch.device | None = None,
    batch_size: int = 1,
    num_workers: int = 0,
    size_divisor: int = 1,
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
        cfg: reads ``cam.bg_threshold/low/high``, ``cam.par.*``, ``data.ignore_index`` and,
            by default, ``eval.scales``/``eval.flip``.
        scales, flip: override the config's test-time augmentation for the CAMs.
        fill_ignore: write uncertain pixels as background (0) instead of 255, for
            second-stage trainers that cannot ignore a label.
        device: None keeps the model's device.
        batch_size, num_workers: data loading (same-size consecutive images share a pass).
        size_divisor: pad each CAM pass to a multiple of this (1 = no padding).
        progress: show a progress bar.
        class_names: background first (default ``dataset.class_names``); stored with the
            metrics.

    Returns:
        None when no item has a mask; otherwise :meth:`ConfusionMatrix.compute` metrics of
        the labels with uncertain pixels counted as background (``miou`` etc., comparable with
        the field's pseudo-label mIoU), plus ``miou_confident`` (uncertain pixels left out),
        ``ignore_fraction`` and ``num_images``.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from dscnet.cam.pseudo_labels import make_pseudo_labels
    from dscnet.evaluation.confusion import ConfusionMatrix
    from dscnet.visualize.palette import save_palette_png

    if device is not None:
        model.to(resolve_device(str(device)))
    model.eval()
    param = next(model.parameters(), None)
    dev = param.device if param is not None else torch.device("cpu")
    scales = list(cfg.eval.scales) if scales is None else list(scales)
    flip = bool(cfg.eval.flip) if flip is None else bool(flip)
    ignore = int(cfg.data.get("ignore_index", 255))
    par = _build_par(cfg)
    if par is not None:
        par = par.to(dev)
    names = list(class_names) if class_names is not None else list(getattr(dataset, "class_names", []))

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=_as_list
    )
    cm_all: ConfusionMatrix | None = None
    cm_confident: ConfusionMatrix | None = None
    scored_pixels = ignored_pixels = num_images = 0

    bar = Progress(
        TextColumn("[bold]pseudo labels"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        disable=not progress,
    )
    with bar:
        task = bar.add_task("pseudo", total=len(dataset))  # type: ignore[arg-type]
        for items in loader:
            for run in _same_size_runs(items):
                images = torch.stack([it["image"] for it in run]).to(dev)
                tags = torch.stack([torch.as_tensor(it["tags"]) for it in run]).to(dev)
                cams = cam_maps(model, images, tags, scales, flip, size_divisor=size_divisor)
                labels = make_pseudo_labels(
                    cams,
                    tags,
                    bg_threshold=float(cfg.cam.bg_threshold),
                    low=cfg.cam.low,
                    high=cfg.cam.high,
                    ignore_index=ignore,
                    par=par,
                    image=images,
                )
                uncertain = labels == ignore
                filled = labels.masked_fill(uncertain, 0)
                written = filled if fill_ignore else labels
                for it, lab in zip(run, written.cpu()):
                    save_palette_png(lab.to(torch.uint8), label_path(out, it["id"]))
                num_images += len(run)

                masks = torch.stack([torch.as_tensor(it["mask"]) for it in run]).to(dev)
                known = masks != ignore
                if bool(known.any()):
                    if cm_all is None:
                        k = tags.shape[1] + 1
                        cm_all = ConfusionMatrix(k, ignore_index=ignore)
                        cm_confident = ConfusionMatrix(k, ignore_index=ignore)
                    assert cm_confident is not None
                    cm_all.update(filled, masks)
                    cm_confident.update(filled, masks.masked_fill(uncertain, ignore))
                    scored_pixels += int(known.sum())
                    ignored_pixels += int((known & uncertain).sum())
            bar.advance(task, len(items))

    if cm_all is None or cm_confident is None:
        return None
    metrics = cm_all.compute()
    metrics.update(
        miou_confident=cm_confident.compute()["miou"],
        ignore_fraction=ignored_pixels / max(scored_pixels, 1),
        num_images=num_images,
        class_names=names,
        protocol=(
            f"pseudo labels from CAMs with ground-truth tags, scales={scales}, flip={flip}, "
            f"PAR={'on' if par is not None else 'off'}; uncertain pixels counted as background"
        ),
    )
    (out / "pseudo_metrics.json").write_text(json.dumps(_nan_to_none(metrics), indent=2))
    return metrics
