"""``dscnet demo``: the whole pipeline on the built-in synthetic benchmark, on a CPU.

1. trains DSCNet from image tags only (config ``synth_cpu``; ``--backbone efficientnet_lite0``
   switches to the real-photo benchmark with the ImageNet-pretrained backbone, ``photos_cpu``);
2. trains the same network on the true masks (fully supervised upper bound);
3. prints CAM, pseudo-label and segmentation mIoU of the first and the segmentation mIoU
   of the second, and writes overlays (image | CAMs | pseudo label | prediction | truth).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from dscnet.config import apply_overrides, load_config
from dscnet.engine.distributed import init_distributed
from dscnet.engine.experiment import RunSummary, train_and_evaluate
from dscnet.utils.io import atomic_write_text
from dscnet.visualize.examples import write_examples

BACKBONE_CONFIGS = {"small_cnn": "synth_cpu", "efficientnet_lite0": "photos_cpu"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="train and evaluate on the built-in synthetic benchmark (CPU, minutes)",
        description="Train DSCNet from image tags and a fully supervised upper bound on the "
        "built-in synthetic benchmark, print CAM / pseudo-label / segmentation mIoU and write "
        "overlays. Nothing is downloaded.",
    )
    p.add_argument("--out", default="runs/demo", help="output folder")
    p.add_argument(
        "--backbone",
        default="small_cnn",
        choices=sorted(BACKBONE_CONFIGS),
        help="small_cnn: from scratch on flat synthetic scenes; efficientnet_lite0: "
        "ImageNet-pretrained (pip extra 'pretrained') on the real-photo benchmark",
    )
    p.add_argument("--config", default=None, help="override the config the backbone selects")
    p.add_argument("--no-upper-bound", action="store_true", help="skip the fully supervised run")
    p.add_argument("--examples", type=int, default=8, help="number of overlay images to write")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.set_defaults(func=run)


def _fmt(value: float | None) -> str:
    return "   n/a" if value is None else f"{100 * value:6.2f}"


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    out = Path(args.out)
    cfg = load_config(args.config or BACKBONE_CONFIGS[args.backbone], args.overrides)
    ctx = init_distributed(cfg.experiment.device)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    weak_cfg = apply_overrides(cfg, [f"experiment.work_dir={out / 'weak'}"])
    print(f"[1/3] training from image tags: {weak_cfg.model.backbone} on {weak_cfg.data.type} ({weak_cfg.train.max_steps} steps)")
    weak = train_and_evaluate(weak_cfg, ctx)

    full: RunSummary | None = None
    if not args.no_upper_bound:
        full_cfg = apply_overrides(
            cfg,
            [
                f"experiment.work_dir={out / 'fully_supervised'}",
                "train.supervision=full",
                "loss.pgcl.enabled=false",
                "loss.sgcl.enabled=false",
                "loss.cross.enabled=false",
            ],
        )
        print("[2/3] training on the true masks (fully supervised upper bound)")
        full = train_and_evaluate(full_cfg, ctx, what=("seg",))

    print("[3/3] writing overlays")
    examples = write_examples(weak.trainer, out / "weak" / "examples", count=args.examples)

    seconds = time.perf_counter() - start
    summary = {
        "config": args.config or BACKBONE_CONFIGS[args.backbone],
        "backbone": str(cfg.model.backbone),
        "data": str(cfg.data.type),
        "val_images": len(weak.trainer.val_set),
        "steps": int(cfg.train.max_steps),
        "cam_miou": weak.metrics["cam"]["miou"],
        "pseudo_miou": weak.metrics["pseudo"]["miou"],
        "pseudo_confident_miou": weak.metrics["pseudo"].get("confident_miou"),
        "pseudo_coverage": weak.metrics["pseudo"].get("coverage"),
        "seg_miou": weak.metrics["seg"]["miou"],
        "fully_supervised_seg_miou": full.metrics["seg"]["miou"] if full else None,
        "train_images_per_s": weak.result.images_per_second,
        "seconds": seconds,
        "overlays": str(examples),
    }
    if full:
        summary["seg_vs_upper_bound"] = summary["seg_miou"] / max(summary["fully_supervised_seg_miou"], 1e-9)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))

    print()
    print(f"dscnet demo — {summary['backbone']} on {summary['data']} val ({summary['val_images']} images), single scale")
    print(f"  CAM mIoU                       {_fmt(summary['cam_miou'])}")
    print(f"  pseudo-label mIoU (PAR)        {_fmt(summary['pseudo_miou'])}")
    print(f"  segmentation mIoU (tags only)  {_fmt(summary['seg_miou'])}")
    print(f"  segmentation mIoU (full masks) {_fmt(summary['fully_supervised_seg_miou'])}")
    if full:
        print(f"  tags-only / fully supervised   {summary['seg_vs_upper_bound']:6.3f}")
    print(f"  wall time {seconds / 60:.1f} min; overlays in {examples}; summary in {out / 'summary.json'}")
    return 0
