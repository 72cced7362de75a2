"""``dscnet predict``: masks for your own images (files, folders, globs)."""

from __future__ import annotations

import argparse

from dscnet.data.readers import DEFAULT_MAX_PIXELS
from dscnet.inference.predict import predict_from_checkpoint
from dscnet.utils.io import check_output_dir


def _scales(text: str) -> list[float]:
    try:
        return [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--scales takes comma-separated numbers, got '{text}'") from None


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="segment images with a trained checkpoint",
        description="Write a VOC-palette PNG mask (same size as the input) per image, plus "
        "an optional colour overlay and per-class CAMs, and index.csv (input -> mask or error). "
        "Tags are never read. A file that cannot be read is reported and skipped; the exit "
        "status is 1 if any failed. --out must lie outside the input folders.",
    )
    p.add_argument("--checkpoint", required=True)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--scales", type=_scales, default=None, help="e.g. 0.5,0.75,1.0,1.25 (default: the config's eval.scales)")
    p.add_argument("--flip", action="store_true", default=None, help="add horizontally flipped passes")
    p.add_argument("--crf", action="store_true", help="dense-CRF refinement (pip extra 'crf')")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--no-overlay", action="store_true", help="do not write colour overlays")
    p.add_argument("--cams", action="store_true", help="also write CAM heatmaps of the classes the model detects")
    p.add_argument(
        "--max-pixels", type=int, default=None,
        help=f"refuse images with more pixels, from their header (decompression-bomb guard; default {DEFAULT_MAX_PIXELS:,})",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_output_dir(args.out)  # before loading the model; predict_paths checks the rest
    kwargs = {} if args.max_pixels is None else {"max_pixels": args.max_pixels}
    summary = predict_from_checkpoint(
        args.checkpoint,
        args.inputs,
        args.out,
        device=args.device,
        scales=args.scales,
        flip=args.flip,
        crf=args.crf,
        save_overlay=not args.no_overlay,
        save_cams=args.cams,
        **kwargs,
    )
    print(f"{summary.ok} image(s) segmented into {args.out}; {len(summary.failed)} failed")
    for path, message in summary.failed:
        print(f"  failed: {message if str(path) in message else f'{path}: {message}'}")
    return 1 if summary.failed else 0
