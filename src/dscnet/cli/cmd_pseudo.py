"""``dscnet pseudo``: export refined pseudo labels of a whole split (for a second stage)."""

from __future__ import annotations

import argparse
import json

from dscnet.config import apply_overrides
from dscnet.data.build import build_dataset
from dscnet.inference.crf import CrfParams
from dscnet.inference.pseudo_export import export_pseudo_labels
from dscnet.models.loading import load_model_from_checkpoint
from dscnet.utils.device import resolve_device
from dscnet.utils.io import check_output_dir


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pseudo",
        help="export pseudo labels of a split as VOC PNGs",
        description="The online pseudo-label rule (CAM -> PAR -> thresholds, at the config's "
        "working scale; --ms: CAMs over cam.export_scales + flips; --crf: dense CRF), from the "
        "images' ground-truth tags (the field's protocol for train-set pseudo labels). "
        "Uncertain pixels are 255 unless --fill-ignore. Prints their mIoU when masks exist. "
        "For a second stage, train on them: dscnet train ... train.supervision=full "
        "data.pseudo_masks=OUT (docs/RESULTS.md).",
    )
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--split", default="train")
    p.add_argument("--out", required=True)
    p.add_argument("--fill-ignore", action="store_true", help="write uncertain pixels as background instead of 255")
    p.add_argument("--ms", action="store_true", help="multi-scale CAMs: cam.export_scales (+ flips: cam.export_flip); choose the thresholds for them with dscnet threshold --ms")
    p.add_argument("--crf", action="store_true", help="dense CRF on the refined scores (eval.crf; needs the crf extra)")
    p.add_argument("--device", default="auto")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of the checkpoint's config")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_output_dir(args.out)
    device = resolve_device(args.device)
    model, cfg, class_names = load_model_from_checkpoint(args.checkpoint, device=device)
    cfg = apply_overrides(cfg, args.overrides)
    dataset = build_dataset(cfg, args.split, train=False)
    metrics = export_pseudo_labels(
        model, dataset, args.out, cfg,
        ms=args.ms,
        fill_ignore=args.fill_ignore, device=device, class_names=class_names,
        crf=CrfParams.from_any(cfg.eval.crf) if args.crf else None,
    )
    print(f"pseudo labels of {len(dataset)} images written to {args.out}")
    if metrics:
        print(json.dumps({k: metrics[k] for k in ("miou", "confident_miou", "coverage", "pixel_accuracy") if k in metrics}, indent=2))
    return 0
