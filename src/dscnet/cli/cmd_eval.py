"""``dscnet eval``: mIoU of segmentation, CAMs or pseudo labels of a checkpoint on a split."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dscnet.config import apply_overrides
from dscnet.data.build import build_dataset
from dscnet.data.subset import SubsetInfo
from dscnet.engine.distributed import cleanup_distributed, init_distributed
from dscnet.engine.evaluate import evaluate
from dscnet.engine.health import background_warning, print_warning
from dscnet.errors import ConfigError
from dscnet.evaluation.io import write_metrics
from dscnet.models.loading import load_model_from_checkpoint
from dscnet.utils.io import atomic_write_text, check_output_dir


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint (segmentation, CAMs or pseudo labels)",
        description="Stream a split through a checkpoint and report mIoU. Segmentation is "
        "reported for each protocol asked: raw (single scale), msf (multi-scale + flip, "
        "scales from eval.ms_scales) and, with --crf, the same with dense CRF.",
    )
    p.add_argument("--checkpoint", required=True, help="a .pth written by dscnet train")
    p.add_argument("--split", default=None, help="split to evaluate (default: the config's val split)")
    p.add_argument(
        "--what",
        default="seg",
        choices=["seg", "cam", "pseudo", "all"],
        help="seg: segmentation head (never reads tags); cam / pseudo: CAMs / refined pseudo "
        "labels from the ground-truth tags (train-set protocol of the field)",
    )
    p.add_argument("--ms", action="store_true", help="also report multi-scale + flip (eval.ms_scales)")
    p.add_argument("--crf", action="store_true", help="also report each protocol with dense CRF (seg)")
    p.add_argument("--out", default=None, help="output folder (default: <checkpoint dir>/../eval/<split>)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of the checkpoint's config (e.g. data.root=...)")
    p.set_defaults(func=run)


def protocols(ms: bool, crf: bool) -> list[tuple[str, bool, bool]]:
    """(name, multi-scale+flip, crf) for each protocol to report, raw first."""
    rows = [("raw", False, False)]
    if ms:
        rows.append(("msf", True, False))
    if crf:
        rows += [(f"{name}_crf", m, True) for name, m, _ in list(rows)]
    return rows


def run(args: argparse.Namespace) -> int:
    ctx = init_distributed(args.device)
    try:
        model, cfg, class_names = load_model_from_checkpoint(args.checkpoint, device=ctx.device)
        cfg = apply_overrides(cfg, args.overrides)
        split = args.split or cfg.data.val_split
        out_dir = Path(args.out) if args.out else Path(args.checkpoint).resolve().parent.parent / "eval" / split
        check_output_dir(out_dir)  # before the evaluation, not after it
        dataset = build_dataset(cfg, split, train=False)
        if not dataset.has_masks:
            raise ConfigError(f"split '{split}' has no ground-truth masks: nothing to evaluate against")
        if list(dataset.class_names) != class_names:
            raise ConfigError(
                f"the classes of split '{split}' ({len(dataset.class_names)}) differ from the "
                f"checkpoint's ({len(class_names)})"
            )
        images = SubsetInfo(split, len(dataset), len(dataset))  # dscnet eval scores the whole split
        modes = ["seg", "cam", "pseudo"] if args.what == "all" else [args.what]
        summary: dict[str, dict] = {}
        notes: list[str] = []  # evaluations that predict (nearly) only background
        for mode in modes:
            rows = protocols(args.ms, args.crf and mode == "seg")
            for name, msf, crf in rows:
                scales = tuple(cfg.eval.ms_scales) if msf else (1.0,)
                res = evaluate(
                    model, dataset, cfg, what=mode, scales=scales, flip=msf, crf=crf,
                    rank=ctx.rank, world_size=ctx.world_size, device=ctx.device, progress=True,
                )
                key = f"{mode}/{name}"
                summary[key] = {k: res.metrics[k] for k in ("miou", "pixel_accuracy", "confident_miou", "coverage") if k in res.metrics}
                note = background_warning(res.metrics, f"{key} on '{split}'", cfg)
                if note:
                    notes.append(note)
                if ctx.is_main:
                    write_metrics(
                        out_dir / f"{mode}_{name}", res.metrics, class_names,
                        res.confusion.matrix.cpu().numpy(),
                        title=f"{mode} ({name}) on {images.describe()}: {args.checkpoint}",
                        extra={**res.extra, **images.as_dict(), "checkpoint": str(args.checkpoint)},
                    )
        if ctx.is_main:
            atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2))
            print(f"{'what/protocol':<18} {'mIoU':>8}")
            for key, vals in summary.items():
                print(f"{key:<18} {100 * vals['miou']:>7.2f}%")
            print(f"metrics written to {out_dir}")
            for note in notes:
                print_warning(note)
    finally:
        cleanup_distributed()
    return 0
