"""How much of the true masks can a CAM grid of a given output stride express? An upper bound.

Usage::

    python benchmarks/cam_grid_oracle.py --root DIR [--config real_cpu] [--split train]
        [--strides 32,16,8] [--threads 1] [--out FILE.json] [key=value ...]

A CAM of output stride ``s`` holds one score per class on a grid of ``ceil(H/s) x ceil(W/s)``
cells, which is resized bilinearly to the image and decided by argmax. The best such grid,
given the true mask, is the *oracle*: each cell holds each class's share of its non-ignored
pixels (the stride-aligned ``s x s`` window, clipped at the image border; pixels labelled
``ignore_index`` count for no class, a cell with no labelled pixel holds zeros); the shares
are resized to ``H x W`` (bilinear, ``align_corners=False``, as the CAMs are), and the argmax
is scored against the same true mask with the project's confusion matrix
(:class:`dscnet.evaluation.score.LabelScore`). No learned CAM decided this way at this stride
can beat it by much: what it loses (thin objects, small parts, rounded corners) is lost to
the grid, not to training.

The images are read with the project's dataset reader (``build_dataset(cfg, split,
train=False)``): the evaluation transform does not resize, so the masks are used and scored
at their original size, as ``dscnet eval`` scores them. ``key=value`` overrides the config
(``data.root=--root`` is set). It prints a markdown table (stride, grid of the most common
image size, mIoU in %) with the machine and the commit, and with ``--out`` writes the per-stride
mIoU and per-class IoU (``null``: class absent from the split) as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dscnet.config import load_config
from dscnet.data.build import build_dataset
from dscnet.evaluation.io import to_jsonable
from dscnet.evaluation.score import LabelScore
from dscnet.utils.machine import describe_machine, git_commit

DEFAULT_STRIDES = (32, 16, 8)


def grid_size(height: int, width: int, stride: int) -> tuple[int, int]:
    """Cells of a stride-``stride`` grid over an ``height x width`` image: ``ceil`` of each side."""
    return math.ceil(height / stride), math.ceil(width / stride)


def area_shares(mask: torch.Tensor, num_classes: int, stride: int, ignore_index: int = 255) -> torch.Tensor:
    """Each class's share of the labelled pixels of every cell of the stride-``stride`` grid.

    Args:
        mask: long ``[H, W]``, class ids ``0..num_classes-1`` or ``ignore_index``.
        num_classes: K, background included.
        stride: cell side in pixels; cells are the aligned ``stride x stride`` windows, the
            last row / column clipped at the image border.
        ignore_index: label of pixels that count for no class.

    Returns:
        float ``[K, ceil(H/stride), ceil(W/stride)]``: in a cell with labelled pixels the
        shares sum to 1; a cell whose pixels are all ignored holds zeros (it votes for no class).

    Raises:
        ValueError: a label is neither a class nor ``ignore_index``, or ``stride < 1``.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    mask = mask.long()
    known = mask != ignore_index
    bad = known & ((mask < 0) | (mask >= num_classes))
    if bool(bad.any()):
        raise ValueError(f"mask holds labels outside 0..{num_classes - 1} and not {ignore_index}: "
                         f"{torch.unique(mask[bad]).tolist()[:10]}")  # fmt: skip
    onehot = F.one_hot(mask.masked_fill(~known, 0), num_classes).permute(2, 0, 1).float()
    onehot = onehot * known.float()
    pool = {"kernel_size": stride, "stride": stride, "ceil_mode": True}
    # Both averages share a border cell's (clipped) divisor, so their ratio is the share.
    votes = F.avg_pool2d(onehot[None], **pool)[0]
    cover = F.avg_pool2d(known.float()[None, None], **pool)[0]
    return votes / cover.clamp_min(1e-12)


def oracle_prediction(mask: torch.Tensor, num_classes: int, stride: int, ignore_index: int = 255) -> torch.Tensor:
    """The best argmax prediction a stride-``stride`` grid of class scores can give for ``mask``.

    The grid holds :func:`area_shares`; it is resized bilinearly (``align_corners=False``) to
    the mask's ``H x W`` and decided by argmax over the K classes. Returns long ``[H, W]``
    (ignored pixels get whatever their neighbourhood votes, class 0 where nothing does).
    """
    shares = area_shares(mask, num_classes, stride, ignore_index)
    up = F.interpolate(shares[None], size=tuple(mask.shape[-2:]), mode="bilinear", align_corners=False)
    return up[0].argmax(0)


def oracle_scores(
    masks: Any, num_classes: int, strides: list[int], ignore_index: int = 255
) -> dict[int, dict[str, Any]]:
    """Score the oracle of every stride over ``masks`` (an iterable of long ``[H, W]`` masks).

    Returns ``{stride: LabelScore.compute() metrics}`` (``miou``, per-class ``iou``, ...),
    one confusion matrix per stride summed over all masks.
    """
    scores = {s: LabelScore(num_classes, ignore_index, torch.device("cpu")) for s in strides}
    for mask in masks:
        for s in strides:
            scores[s].update(oracle_prediction(mask, num_classes, s, ignore_index), mask)
    return {s: score.compute() for s, score in scores.items()}


def format_table(metrics: dict[int, dict[str, Any]], size: tuple[int, int]) -> str:
    """The markdown table: stride, grid of an ``size`` (H, W) image, oracle mIoU in %."""
    h, w = size
    lines = [f"| stride | grid at {h}×{w} (rows × cols) | oracle mIoU (%) |", "|---|---|---|"]
    for s, m in metrics.items():
        gh, gw = grid_size(h, w, s)
        lines.append(f"| {s} | {gh} × {gw} | {100 * m['miou']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring. Returns the exit status (2: no such --root)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="VOC-layout folder")
    parser.add_argument("--config", default="real_cpu")
    parser.add_argument("--split", default="train")
    parser.add_argument("--strides", default=",".join(str(s) for s in DEFAULT_STRIDES), help="comma-separated output strides")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", default=None, help="JSON file to write")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    if not Path(args.root).is_dir():
        print(f"{args.root}: no such folder (--root)", file=sys.stderr)
        return 2
    try:
        strides = [int(s) for s in args.strides.split(",") if s.strip()]
    except ValueError:
        strides = []
    if not strides or min(strides) < 1:
        print(f"--strides {args.strides!r}: give positive integers, e.g. 32,16,8", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, [f"data.root={args.root}", *args.overrides])
    dataset = build_dataset(cfg, args.split, train=False)
    if not dataset.has_masks:
        print(f"{args.root}: split {args.split} has no masks", file=sys.stderr)
        return 2
    num_classes = dataset.num_classes + 1
    ignore = int(cfg.data.ignore_index)
    sizes: Counter[tuple[int, int]] = Counter()

    def masks() -> Any:
        for i in range(len(dataset)):
            mask = dataset[i]["mask"]  # the evaluation transform's mask: the original size
            sizes[tuple(mask.shape)] += 1
            yield mask

    metrics = oracle_scores(masks(), num_classes, strides, ignore)
    size, count = sizes.most_common(1)[0]
    machine = describe_machine()
    text = (
        f"CAM-grid oracle: {args.root}, split {args.split} ({len(dataset)} images, {count} of them "
        f"{size[0]}×{size[1]}), config {args.config}, commit {git_commit()}, {machine}\n\n"
        + format_table(metrics, size)
        + "\n\nmasks scored at their original size; shares resized bilinearly, then argmax.\n"
    )
    print(text)
    if args.out:
        names = list(dataset.class_names)
        report = {
            "root": args.root, "split": args.split, "config": args.config, "commit": git_commit(),
            "machine": machine, "images": len(dataset), "class_names": names,
            "typical_size": list(size), "sizes": {f"{h}x{w}": n for (h, w), n in sizes.most_common()},
            "strides": {
                str(s): {"grid": list(grid_size(*size, s)), "miou": m["miou"],
                         "iou": dict(zip(names, m["iou"])), "pixel_accuracy": m["pixel_accuracy"]}
                for s, m in metrics.items()
            },
        }  # fmt: skip
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(to_jsonable(report), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
