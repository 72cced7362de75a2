"""``dscnet export``: the segmentation network as ONNX (dynamic size) or TorchScript."""

from __future__ import annotations

import argparse
from pathlib import Path

from dscnet.inference.export import export_onnx, export_torchscript
from dscnet.models.loading import load_model_from_checkpoint
from dscnet.utils.io import check_output_file


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX or TorchScript",
        description="Exports backbone + segmentation head (input: normalised images "
        "[B,3,H,W], any H and W; output: logits [B,C+1,H,W]).",
    )
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    p.add_argument("--out", default=None, help="output file (default: next to the checkpoint)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    suffix = ".onnx" if args.format == "onnx" else ".torchscript.pt"
    out = check_output_file(Path(args.out) if args.out else Path(args.checkpoint).with_suffix(suffix))
    model, cfg, class_names = load_model_from_checkpoint(args.checkpoint, device="cpu")
    size = cfg.data.train_aug.crop_size
    if args.format == "onnx":
        path = export_onnx(model, out, example_size=(1, 3, size, size))
    else:
        path = export_torchscript(model, out, example_size=(1, 3, size, size))
    print(f"exported {args.format} to {path} ({len(class_names)} classes: {', '.join(class_names)})")
    return 0
