"""``dscnet demo``: the whole pipeline on the built-in synthetic benchmark, on a CPU.

1. trains DSCNet from image tags only (config ``synth_cpu``; ``--backbone efficientnet_lite0``
   switches to the real-photo benchmark with the ImageNet-pretrained backbone, ``photos_cpu``);
2. trains the same network on the true masks (fully supervised upper bound), in a second
   process alongside the first when the machine has two cores or more;
3. prints CAM, pseudo-label and segmentation mIoU of the first and the segmentation mIoU
   of the second, and writes overlays (image | CAMs | pseudo label | prediction | truth).
"""

from __future__ import annotations

import argparse
import json
import os
import time

from omegaconf import OmegaConf

from dscnet.config import apply_overrides, load_config
from dscnet.engine.experiment import RunView, run_jobs
from dscnet.utils.io import atomic_write_text, check_output_dir
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
    p.add_argument(
        "--workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="train the two runs in parallel processes (one torch thread each) when > 1",
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.set_defaults(func=run)


def _fmt(value: float | None) -> str:
    return "   n/a" if value is None else f"{100 * value:6.2f}"


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    out = check_output_dir(args.out)
    name = args.config or BACKBONE_CONFIGS[args.backbone]
    cfg = load_config(name, args.overrides)
    weak_cfg = apply_overrides(cfg, [f"experiment.work_dir={out / 'weak'}"])
    jobs = [(OmegaConf.to_container(weak_cfg, resolve=True), "weak", cfg.experiment.seed, ("seg", "cam", "pseudo"))]
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
        jobs.append((OmegaConf.to_container(full_cfg, resolve=True), "fully_supervised", cfg.experiment.seed, ("seg",)))
    workers = max(1, min(args.workers, len(jobs)))
    print(
        f"[1/2] training {cfg.model.backbone} on {cfg.data.type} for {cfg.train.max_steps} steps: "
        f"from image tags{' and on the true masks (upper bound)' if len(jobs) > 1 else ''}"
        f"{f', {workers} runs in parallel' if workers > 1 else ''}",
        flush=True,
    )
    runs = {r["name"]: r for r in run_jobs(jobs, workers=workers, on_done=_announce)}
    weak, full = runs["weak"], runs.get("fully_supervised")

    print("[2/2] writing overlays", flush=True)
    view = RunView(weak["run_dir"])
    examples = write_examples(view, out / "weak" / "examples", count=args.examples)

    seconds = time.perf_counter() - start
    wm = weak["metrics"]
    summary = {
        "config": name,
        "backbone": cfg.model.backbone,
        "data": cfg.data.type,
        "val_images": len(view.val_set),
        "steps": cfg.train.max_steps,
        "cam_split": weak["splits"]["cam"],
        "cam_miou": wm["cam"]["miou"],
        "pseudo_miou": wm["pseudo"]["miou"],
        "pseudo_confident_miou": wm["pseudo"].get("confident_miou"),
        "pseudo_coverage": wm["pseudo"].get("coverage"),
        "seg_miou": wm["seg"]["miou"],
        "fully_supervised_seg_miou": full["metrics"]["seg"]["miou"] if full else None,
        "train_images_per_s": weak["images_per_second"],
        "train_seconds": weak["seconds"],
        "seconds": seconds,
        "overlays": str(examples),
    }
    if full:
        summary["seg_vs_upper_bound"] = summary["seg_miou"] / max(summary["fully_supervised_seg_miou"], 1e-9)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))

    print()
    print(
        f"dscnet demo — {summary['backbone']} on {summary['data']}, single scale; segmentation on "
        f"{cfg.data.val_split} ({summary['val_images']} images), CAMs and pseudo labels on "
        f"{summary['cam_split']}"
    )
    print(f"  CAM mIoU                       {_fmt(summary['cam_miou'])}")
    print(f"  pseudo-label mIoU (PAR)        {_fmt(summary['pseudo_miou'])}")
    print(f"  segmentation mIoU (tags only)  {_fmt(summary['seg_miou'])}")
    print(f"  segmentation mIoU (full masks) {_fmt(summary['fully_supervised_seg_miou'])}")
    if full:
        print(f"  tags-only / fully supervised   {summary['seg_vs_upper_bound']:6.3f}")
    print(f"  wall time {seconds / 60:.1f} min; overlays in {examples}; summary in {out / 'summary.json'}")
    return 0


def _announce(res: dict) -> None:
    print(f"      {res['name']} run done in {res['seconds'] / 60:.1f} min ({res['images_per_second']:.1f} images/s)", flush=True)
