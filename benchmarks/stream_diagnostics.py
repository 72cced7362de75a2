"""What do DSCNet's streams do to the network that makes the CAMs? Measurements, no tuning.

Usage::

    python benchmarks/stream_diagnostics.py --dscnet RUN_DIR [--b RUN_DIR] [--batches 20]
        [--out FILE.json] [key=value ...]

``RUN_DIR`` is a finished ``dscnet train`` run (``checkpoints/last.pth``); the config comes
from its checkpoint, ``key=value`` overrides it (e.g. ``data.root=...``). It prints, and
writes as JSON:

1. **Gradients at the parameters that make the CAMs** (DSCNet run, on ``--batches``
   training batches drawn as in training, every term switched on): for each loss term
   (weight × ramp applied, i.e. what training adds), the gradient norm at the classifier
   ``W`` (CAM = W·F), at the backbone's last stage (the output feature map's own layers), at
   the whole trainable backbone and at the feature map ``F`` itself; and the cosine between
   the streams' backbone gradient and that of ``L_cls`` (agreement or conflict).
2. **How full the memories are** (pixel queue, node queue / prototypes) and each term's
   loss against its floor ``log |positives|`` and its ceiling ``log |keys|`` (uniform
   similarities), from the same batches: a term sitting near its ceiling learned nothing.
3. **Feature geometry in tagged regions** (B and DSCNet, train split, true masks): cells of
   the output grid covered ≥ 90 % by one class; mean cosine of cells of the same class in
   *different images* (intra), of different classes (inter), and the nearest-class-mean
   accuracy of the cells of each image among its own tags + background (what a CAM has to
   separate). For the DSCNet run also in the PGCL embedding space.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dscnet.config import apply_overrides, typed
from dscnet.data.build import build_dataset
from dscnet.engine.distributed import DistContext
from dscnet.engine.trainer import Trainer
from dscnet.models.loading import load_checkpoint
from dscnet.utils.machine import cpu_model

PURE_CELL = 0.9
MAX_CELLS = 4000


def _trainer(run_dir: Path, overrides: list[str], work_dir: Path) -> Trainer:
    """A Trainer resumed from the run's last checkpoint (its config, with ``overrides``)."""
    ckpt_path = run_dir / "checkpoints" / "last.pth"
    cfg = load_checkpoint(ckpt_path)["config"]
    cfg = apply_overrides(typed(cfg, str(ckpt_path)), [*overrides, f"experiment.work_dir={work_dir}"])
    cfg.model.pretrained = None  # every weight comes from the checkpoint
    return Trainer(cfg, DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu")), resume=str(ckpt_path))


def last_stage_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The backbone layers after its second-to-last feature level (timm CNNs: the stride-32
    blocks, ``conv_head`` and its norm): the layers that make the output map ``F`` alone."""
    body = getattr(model.backbone, "body", None)
    if body is None or not hasattr(body, "feature_info"):  # e.g. small_cnn: its last block
        last: torch.nn.Module = model.backbone
        while len(children := [m for m in last.children() if any(True for _ in m.parameters())]) >= 1:
            last = children[-1]
            if len(children) > 1:
                break
        return [p for p in last.parameters() if p.requires_grad]
    levels = body.feature_info
    cut = int(levels[-2]["module"].split(".")[1])
    keep = []
    for name, p in body.named_parameters():
        parts = name.split(".")
        late = parts[0] != "blocks" and parts[0] not in ("conv_stem", "bn1")
        if p.requires_grad and (late or (parts[0] == "blocks" and int(parts[1]) > cut)):
            keep.append(p)
    return keep


def _norm(grads: list[torch.Tensor | None]) -> float:
    sq = sum(float(g.pow(2).sum()) for g in grads if g is not None)
    return math.sqrt(sq)


def _flat(grads: list[torch.Tensor | None], params: list[torch.nn.Parameter]) -> torch.Tensor:
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)])


def gradient_table(trainer: Trainer, batches: int) -> dict[str, Any]:
    """Per-term gradient norms at the CAM path, loss values against floor and ceiling."""
    model, objective = trainer.model, trainer.objective
    model.train()
    objective.eval()  # no memory writes: every batch sees the checkpoint's memories
    step = trainer.cfg.train.max_steps - 1  # every term on, ramp at 1
    backbone = [p for p in model.backbone.parameters() if p.requires_grad]
    last_stage = last_stage_parameters(model)
    classifier = list(model.classifier.parameters())
    weights = {"cls": 1.0, "seg": objective.w_seg}
    ramp = objective.contrast_ramp(step)
    weights.update(pgcl=ramp * objective.w_pgcl, sgcl=ramp * objective.w_sgcl, cross=ramp * objective.w_cross)
    rows: dict[str, dict[str, list[float]]] = {}
    cos_rows: list[float] = []
    it = iter(trainer.loader)
    for _ in range(batches):
        batch = next(it)
        images, tags, valid = batch["image"], batch["tags"], batch.get("valid")
        out = model(images, tags, valid)
        out["features"].retain_grad()
        loss = objective(out, model, images, tags, step, masks=batch["mask"], valid=valid)
        stream_grad = None
        cls_grad = None
        for name, value in loss.terms.items():
            weighted = weights[name] * value
            params = classifier + backbone + [out["features"]]
            grads = torch.autograd.grad(weighted, params, retain_graph=True, allow_unused=True)
            g_cls, g_bb, g_feat = grads[: len(classifier)], grads[len(classifier) : -1], grads[-1]
            ids = {id(p) for p in last_stage}
            g_last = [g for g, p in zip(g_bb, backbone) if id(p) in ids]
            row = rows.setdefault(name, {k: [] for k in ("loss", "classifier", "last_stage", "backbone", "features")})
            row["loss"].append(float(value.detach()))
            row["classifier"].append(_norm(list(g_cls)))
            row["last_stage"].append(_norm(g_last))
            row["backbone"].append(_norm(list(g_bb)))
            row["features"].append(_norm([g_feat]))
            flat = _flat(list(g_bb), backbone)
            if name == "cls":
                cls_grad = flat
            elif name in ("pgcl", "sgcl", "cross"):
                stream_grad = flat if stream_grad is None else stream_grad + flat
        groups = trainer.cfg.data.sampler.groups_per_batch
        for name, n_keys in _key_counts(objective, out, groups).items():
            stats = getattr(objective, name).last_stats
            rows[name].setdefault("floor_log_positives", []).append(math.log(max(float(stats["mean_positives"]), 1.0)))
            rows[name].setdefault("ceiling_log_keys", []).append(math.log(max(n_keys, 1.0)))
        if stream_grad is not None and cls_grad is not None:
            cos_rows.append(float(F.cosine_similarity(stream_grad, cls_grad, dim=0)))
        model.zero_grad(set_to_none=True)
    table = {name: {k: sum(v) / len(v) for k, v in cols.items()} for name, cols in rows.items()}
    for name in table:
        table[name]["weight"] = weights[name]
    return {"terms": table, "cos_streams_vs_cls_backbone": sum(cos_rows) / len(cos_rows) if cos_rows else None}


def _key_counts(objective: torch.nn.Module, out: dict[str, torch.Tensor], groups: int) -> dict[str, float]:
    """Keys per anchor of PGCL and SGCL on the last batch (uniform similarities give a loss of
    ``log`` of it): the other anchors of the group (or nodes of the batch) plus the memory."""
    counts: dict[str, float] = {}
    pgcl = getattr(objective, "pgcl", None)
    if pgcl is not None and pgcl.last_stats:
        memory = int(pgcl.memory.count.sum()) if pgcl.memory is not None else 0
        counts["pgcl"] = float(pgcl.last_stats["anchors"]) / groups - 1 + memory
    sgcl = getattr(objective, "sgcl", None)
    if sgcl is not None and sgcl.last_stats:
        mem = sgcl.memory
        memory = 0 if mem is None else int(mem.count.sum() if hasattr(mem, "count") else mem.initialized.sum())
        counts["sgcl"] = float(len(out["node_class"])) - 1 + memory
    return counts


def memory_fill(trainer: Trainer) -> dict[str, Any]:
    """Entries per class in the PGCL pixel queue and the SGCL node memory."""
    objective, names = trainer.objective, trainer.class_names
    out: dict[str, Any] = {}
    pgcl = getattr(objective, "pgcl", None)
    if pgcl is not None and pgcl.memory is not None:
        out["pgcl_queue"] = dict(zip(names, pgcl.memory.count.tolist()))
        out["pgcl_queue_size"] = int(pgcl.memory.queue.shape[1])
    sgcl = getattr(objective, "sgcl", None)
    if sgcl is not None and sgcl.memory is not None:
        mem = sgcl.memory
        counts = mem.count if hasattr(mem, "count") else mem.initialized.long()
        out["sgcl_memory"] = dict(zip(names, counts.tolist()))
    return out


@torch.no_grad()
def geometry(trainer: Trainer, embed: bool) -> dict[str, Any]:
    """Cosine structure of the output features in cells covered by one class (true masks)."""
    cfg, model = trainer.cfg, trainer.model
    model.eval()
    dataset = build_dataset(cfg, cfg.data.cam_split if "cam_split" in cfg.data else cfg.data.train_split, train=False)
    spaces: dict[str, list[torch.Tensor]] = {"features": []}
    if embed and model.projection is not None:
        spaces["pgcl_embedding"] = []
    labels, images, tags = [], [], []
    for i in range(len(dataset)):
        item = dataset[i]
        feats = model._features(item["image"][None])
        h, w = feats.shape[-2:]
        mask = item["mask"].clone()
        known = (mask != 255).float()
        mask[mask == 255] = 0
        onehot = F.one_hot(mask, model.num_classes + 1).permute(2, 0, 1).float() * known
        share = F.adaptive_avg_pool2d(onehot[None], (h, w))[0]
        cover = F.adaptive_avg_pool2d(known[None, None], (h, w))[0, 0]
        frac, cls = share.max(0)
        pure = (frac >= PURE_CELL * cover.clamp_min(1e-6)) & (cover > 0.5)
        spaces["features"].append(feats[0].flatten(1).t()[pure.flatten()])
        if "pgcl_embedding" in spaces:
            spaces["pgcl_embedding"].append(model.projection(feats)[0].flatten(1).t()[pure.flatten()])
        labels.append(cls.flatten()[pure.flatten()])
        images.append(torch.full((int(pure.sum()),), i))
        tags.append(item["tags"])
    y, img = torch.cat(labels), torch.cat(images)
    tag_sets = torch.stack(tags) > 0
    gen = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(y), generator=gen)[:MAX_CELLS]
    result: dict[str, Any] = {"cells": int(len(y))}
    for space, chunks in spaces.items():
        z = F.normalize(torch.cat(chunks), dim=1)
        zs, ys, imgs = z[pick], y[pick], img[pick]
        sim = zs @ zs.t()
        same_cls = ys[:, None] == ys[None]
        other_img = imgs[:, None] != imgs[None]
        fg = (ys[:, None] > 0) & (ys[None] > 0)
        protos = torch.stack([
            F.normalize(z[y == c].mean(0), dim=0) if bool((y == c).any()) else torch.zeros(z.shape[1])
            for c in range(model.num_classes + 1)
        ])  # fmt: skip
        scores = z @ protos.t()
        allowed = torch.cat([torch.ones(len(y), 1, dtype=torch.bool), tag_sets[img]], dim=1)
        pred = scores.masked_fill(~allowed, -2).argmax(1)
        result[space] = {
            "intra_class_other_image": float(sim[same_cls & other_img & fg].mean()),
            "inter_class_fg": float(sim[~same_cls & fg].mean()),
            "fg_vs_bg": float(sim[(ys[:, None] > 0) & (ys[None] == 0)].mean()),
            "bg_vs_bg_other_image": float(sim[(ys[:, None] == 0) & (ys[None] == 0) & other_img].mean()),
            "nearest_mean_accuracy_fg": float((pred == y)[y > 0].float().mean()),
            "nearest_mean_accuracy_bg": float((pred == y)[y == 0].float().mean()),
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dscnet", required=True, help="run directory of a DSCNet run")
    parser.add_argument("--b", default=None, help="run directory of the B run of the same seed")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--out", default=None)
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    scratch = Path(args.out or "runs/stream_diagnostics").with_suffix("")
    report: dict[str, Any] = {"machine": cpu_model(), "torch": torch.__version__}
    trainer = _trainer(Path(args.dscnet), ["train.progress=false", *args.overrides], scratch / "dscnet")
    report["gradients"] = gradient_table(trainer, args.batches)
    report["memory"] = memory_fill(trainer)
    report["geometry"] = {"DSCNet": geometry(trainer, embed=True)}
    if args.b:
        b = _trainer(Path(args.b), ["train.progress=false", *args.overrides], scratch / "b")
        report["geometry"]["B"] = geometry(b, embed=False)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
