"""Pictures of what a trained model sees, taken from a :class:`~dscnet.engine.trainer.Trainer`.

- :func:`write_examples`: one strip per validation image (image | CAMs | pseudo label |
  prediction | truth), worst per-image mIoU first, plus ``index.json`` for ``dscnet report``.
- :func:`write_cam_comparison`: CAMs of several runs (e.g. B and DSCNet) on the same images.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dscnet.data.transforms import denormalize
from dscnet.evaluation.confusion import ConfusionMatrix
from dscnet.utils.io import atomic_write_text
from dscnet.visualize.overlay import as_rgb_uint8, cam_heatmap, example_strip, save_grid


@torch.no_grad()
def predict_examples(trainer: Any, indices: list[int]) -> list[dict[str, Any]]:
    """Image, CAMs, pseudo label, prediction and truth of validation images ``indices``.

    ``trainer`` is a :class:`~dscnet.engine.trainer.Trainer` or anything with its ``cfg``,
    ``model``, ``labeler``, ``val_set``, ``device`` and ``class_names``
    (:class:`~dscnet.engine.experiment.RunView`).
    """
    cfg, model, labeler = trainer.cfg, trainer.model, trainer.labeler
    full_size_cams = labeler.variant(refine=False, band=False, scale=1.0)
    was_training = model.training
    model.eval()
    records = []
    for i in indices:
        sample = trainer.val_set[i]
        image = sample["image"][None].to(trainer.device)
        tags = sample["tags"][None].to(trainer.device)
        cam_logits, _ = model.classify(image)
        cams = full_size_cams.cams(image, tags, cam_logits=cam_logits)
        pseudo = labeler(image, tags, cam_logits=cam_logits, model=model)
        pred = model.segment(image).argmax(1)
        truth, miou = None, None
        if trainer.val_set.has_masks:
            truth = sample["mask"]
            cm = ConfusionMatrix(model.num_classes + 1)
            cm.update(pred[0].cpu(), truth)
            miou = cm.compute()["miou"]
        records.append(
            {
                "id": str(sample["id"]),
                "image": as_rgb_uint8(
                    denormalize(image.float(), tuple(cfg.data.mean), tuple(cfg.data.std))[0].cpu()
                ),
                "cams": cams[0].cpu(),
                "tags": sample["tags"],
                "pseudo": pseudo[0].cpu(),
                "pred": pred[0].cpu(),
                "truth": truth,
                "miou": miou,
            }
        )
    model.train(was_training)
    return records


def write_examples(trainer: Any, out_dir: str | Path, count: int = 8) -> Path:
    """Write ``count`` example strips (worst mIoU first), a grid and ``index.json``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n = min(count, len(trainer.val_set))
    records = predict_examples(trainer, list(range(n)))
    records.sort(key=lambda r: r["miou"] if r["miou"] is not None else -1.0)
    strips, index = [], []
    for r in records:
        strip = example_strip(
            r["image"],
            r["cams"],
            r["tags"],
            r["pseudo"],
            r["pred"],
            r["truth"],
            trainer.class_names,
            title=f"{r['id']}  mIoU {100 * (r['miou'] or 0):.1f}",
        )
        path = out_dir / f"{r['id']}_strip.png"
        save_grid([strip], path, gap=0)
        strips.append(strip)
        index.append({"id": r["id"], "image": path.name, "miou": r["miou"]})
    save_grid(strips, out_dir / "grid.png")
    atomic_write_text(out_dir / "index.json", json.dumps(index, indent=2))
    return out_dir / "grid.png"


def write_cam_comparison(trainers: Mapping[str, Any], path: str | Path, count: int = 6) -> Path:
    """One row per image: the image, then the CAM (max over tagged classes) of each run."""
    names = list(trainers)
    first = trainers[names[0]]
    n = min(count, len(first.val_set))
    per_run = {name: predict_examples(t, list(range(n))) for name, t in trainers.items()}
    rows = []
    for k in range(n):
        image = per_run[names[0]][k]["image"]
        panels = [image]
        for name in names:
            r = per_run[name][k]
            cam = r["cams"].max(0).values.numpy()
            panels.append(cam_heatmap(image, cam))
        rows.append(
            np.concatenate(
                [np.pad(p, ((0, 0), (0, 4), (0, 0)), constant_values=255) for p in panels], axis=1
            )
        )
    grid = save_grid(rows, path)
    atomic_write_text(
        Path(path).with_suffix(".txt"),
        "columns: image, " + ", ".join(f"CAM of {n}" for n in names) + "\n",
    )
    return grid
