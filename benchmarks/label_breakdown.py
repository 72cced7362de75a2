"""Where do the pixels of each true class end up in a folder of exported pseudo labels?

Usage::

    python benchmarks/label_breakdown.py --root DATA_ROOT --labels LABEL_DIR [LABEL_DIR ...]
        [--split train] [--config real_cpu] [--out FILE.json] [key=value ...]

Each labels folder holds ``<image id>.png`` for every image of the split, as ``dscnet pseudo``
writes them (VOC palette or greyscale PNGs of class ids ``0..C``, ``255`` = uncertain). The
true masks are read with the project's dataset reader (``build_dataset(cfg, split,
train=False)``, the evaluation transform: original size); true pixels labelled
``data.ignore_index`` are skipped. For every true class the labelled pixels are split into
four outcomes:

- **itself**: the label is the true class (for background: background);
- **other object**: the label is a foreground class other than the true one (for background:
  any foreground class);
- **background**: the label is background (an object lost to the background; for the
  background row this is "itself" and shown as ``—``);
- **uncertain**: the label is ``255``.

It prints one markdown table per folder (rows: background, all object classes together,
then each class; columns: true pixels and the share of each outcome in %), under a line with
the folder's mIoU (uncertain pixels counted as background, as ``dscnet eval --what pseudo``
and ``dscnet pseudo`` score them, through :class:`dscnet.evaluation.score.LabelScore`), its
coverage (the share of pixels with a true label whose label is not 255), the commit and the
machine. With ``--out`` the same numbers (shares as fractions, ``null`` where a class has no
true pixel) and each folder's full confusion (true class x label, the last column = 255) are
written as JSON.

``key=value`` overrides the config (``data.root=--root`` is set); given after ``--labels``,
words with a ``=`` that name no folder are taken as overrides. Exit status 2, with a message naming the file on stderr: no such ``--root`` or labels
folder, a label PNG missing for an image of the split, a label PNG whose size differs from
its true mask, or label ids outside ``0..C`` and not 255.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from dscnet.config import load_config
from dscnet.data.build import build_dataset
from dscnet.data.readers import read_mask
from dscnet.errors import DatasetError
from dscnet.evaluation.io import to_jsonable
from dscnet.evaluation.score import LabelScore
from dscnet.inference.pseudo_export import label_path
from dscnet.utils.machine import describe_machine, git_commit

OUTCOMES = ("itself", "other_object", "background", "uncertain")
HEADINGS = ("→ itself %", "→ other object %", "→ background %", "→ uncertain %")


def label_confusion(truth: torch.Tensor, labels: torch.Tensor, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """Pixel counts of true class x label, the label's 255 in a column of its own.

    Args:
        truth: long ``[H, W]`` true mask, ids ``0..K-1`` or ``ignore_index`` (skipped).
        labels: integer ``[H, W]`` labels, ids ``0..K-1`` or ``ignore_index`` (uncertain).
        num_classes: K, background included.
        ignore_index: the "no label" id of both maps.

    Returns:
        int64 ``[K, K + 1]``: ``[t, l]`` pixels of true class ``t`` labelled ``l``; column ``K``
        holds the uncertain ones.

    Raises:
        ValueError: shapes differ, or an id is neither a class nor ``ignore_index``.
    """
    if truth.shape != labels.shape:
        raise ValueError(f"labels shape {tuple(labels.shape)} differs from the mask's {tuple(truth.shape)}")
    k = num_classes
    truth = truth.reshape(-1).long()
    labels = labels.reshape(-1).long()
    keep = truth != ignore_index
    truth, labels = truth[keep], labels[keep]
    labels = torch.where(labels == ignore_index, torch.full_like(labels, k), labels)
    for name, ids, top in (("mask", truth, k), ("labels", labels, k + 1)):
        bad = (ids < 0) | (ids >= top)
        if bool(bad.any()):
            raise ValueError(f"{name} holds ids outside 0..{k - 1} and not {ignore_index}: "
                             f"{torch.unique(ids[bad]).tolist()[:10]}")  # fmt: skip
    counts = torch.bincount(truth * (k + 1) + labels, minlength=k * (k + 1))
    return counts.reshape(k, k + 1)


def outcome_counts(confusion: torch.Tensor) -> torch.Tensor:
    """The four outcomes of every true class from a :func:`label_confusion` matrix.

    Returns int64 ``[K, 4]``: itself, other object, background, uncertain (see
    :data:`OUTCOMES`). Row 0 (background) has its background pixels under "itself" and 0
    under "background"; its "other object" is every foreground class.
    """
    k = confusion.shape[0]
    fg = confusion[:, 1:k]  # labelled as some foreground class
    itself = torch.diagonal(confusion[:, :k])
    out = torch.zeros(k, 4, dtype=torch.int64)
    out[:, 0] = itself
    out[:, 1] = fg.sum(1) - torch.where(torch.arange(k) > 0, itself, torch.zeros_like(itself))
    out[:, 2] = confusion[:, 0]
    out[0, 2] = 0  # background -> background is "itself"
    out[:, 3] = confusion[:, k]
    return out


def _shares(row: torch.Tensor, background_row: bool = False) -> dict[str, float | None]:
    total = int(row.sum())
    shares: dict[str, float | None] = {
        name: (int(v) / total if total else None) for name, v in zip(OUTCOMES, row.tolist())
    }
    if background_row:
        shares["background"] = None  # it is "itself"
    return shares


def breakdown(confusion: torch.Tensor, class_names: list[str]) -> list[dict[str, Any]]:
    """The table's rows from a :func:`label_confusion` matrix summed over a split.

    Returns one dict per row: background, ``objects (all)`` (every foreground class together)
    and each foreground class, with ``name``, ``true_pixels`` and ``shares`` (fractions of the
    row's true pixels per outcome of :data:`OUTCOMES`; ``None`` when the row has no true pixel,
    and for the background row's ``background``, which is its ``itself``).
    """
    counts = outcome_counts(confusion)
    rows = [{"name": class_names[0], "true_pixels": int(counts[0].sum()), "shares": _shares(counts[0], True)}]
    objects = counts[1:].sum(0)
    rows.append({"name": "objects (all)", "true_pixels": int(objects.sum()), "shares": _shares(objects)})
    for c in range(1, counts.shape[0]):
        rows.append({"name": class_names[c], "true_pixels": int(counts[c].sum()), "shares": _shares(counts[c])})
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """The markdown table of :func:`breakdown`'s rows (shares in %, ``—`` where undefined)."""
    lines = ["| true class | true pixels | " + " | ".join(HEADINGS) + " |", "|---|---:|" + "---:|" * len(HEADINGS)]
    for row in rows:
        cells = ["—" if row["shares"][k] is None else f"{100 * row['shares'][k]:.1f}" for k in OUTCOMES]
        lines.append(f"| {row['name']} | {row['true_pixels']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def check_labels_present(folder: Path, ids: list[str]) -> None:
    """Raise :class:`DatasetError` naming the first ``<id>.png`` missing from ``folder``."""
    missing = [p for p in (label_path(folder, i) for i in ids) if not p.is_file()]
    if missing:
        raise DatasetError(
            f"{missing[0]}: label PNG not found ({len(missing)} of the {len(ids)} images of the split "
            f"have none in {folder})"
        )


def read_labels(path: Path, size: tuple[int, int], num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """A label PNG as long ``[H, W]``, checked to be ``size`` (H, W) with ids ``0..C`` or 255.

    ``num_classes`` is C (foreground classes). Raises :class:`DatasetError` naming the file.
    """
    labels = read_mask(path, num_classes=num_classes, ignore_index=ignore_index)
    if tuple(labels.shape) != tuple(size):
        raise DatasetError(
            f"{path}: label size {labels.shape[1]}x{labels.shape[0]} differs from its true mask "
            f"({size[1]}x{size[0]}, width x height)"
        )
    return torch.from_numpy(labels.astype("int64"))


def score_folders(dataset: Any, folders: list[Path], ignore_index: int = 255) -> list[dict[str, Any]]:
    """Read every image's true mask once and each folder's label for it; sum per folder.

    Returns per folder ``{"confusion": [K, K+1] counts, "metrics": LabelScore metrics}``
    (``miou`` with uncertain counted as background, ``confident_miou``, ``coverage``, ...).

    Raises:
        DatasetError: a label PNG is missing, unreadable, of the wrong size or holds ids
            outside ``0..C`` and not 255.
    """
    for folder in folders:
        check_labels_present(folder, list(dataset.ids))
    k = dataset.num_classes + 1
    confusions = [torch.zeros(k, k + 1, dtype=torch.int64) for _ in folders]
    scores = [LabelScore(k, ignore_index, torch.device("cpu"), uncertain=True) for _ in folders]
    for i in range(len(dataset)):
        item = dataset[i]
        mask = item["mask"]  # the evaluation transform's mask: the original size
        for folder, confusion, score in zip(folders, confusions, scores):
            labels = read_labels(label_path(folder, item["id"]), tuple(mask.shape), k - 1, ignore_index)
            confusion += label_confusion(mask, labels, k, ignore_index)
            score.update(labels, mask)
    return [{"confusion": c, "metrics": s.compute()} for c, s in zip(confusions, scores)]


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring. Returns the exit status (2: bad input)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="VOC-layout folder with the true masks")
    parser.add_argument("--labels", required=True, nargs="+", help="folders of exported <id>.png labels")
    parser.add_argument("--config", default="real_cpu")
    parser.add_argument("--split", default="train")
    parser.add_argument("--out", default=None, help="JSON file to write")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    # --labels takes every word after it: key=value words that name no folder are overrides.
    moved = [w for w in args.labels if "=" in w and not Path(w).is_dir()]
    args.labels = [w for w in args.labels if w not in moved]
    args.overrides = [*moved, *args.overrides]
    if not args.labels:
        parser.error("--labels: give at least one folder")
    torch.set_num_threads(1)
    if not Path(args.root).is_dir():
        print(f"{args.root}: no such folder (--root)", file=sys.stderr)
        return 2
    folders = [Path(f) for f in args.labels]
    for folder in folders:
        if not folder.is_dir():
            print(f"{folder}: no such folder (--labels)", file=sys.stderr)
            return 2
    cfg = load_config(args.config, [f"data.root={args.root}", *args.overrides])
    ignore = int(cfg.data.ignore_index)
    try:
        dataset = build_dataset(cfg, args.split, train=False)
        if not dataset.has_masks:
            print(f"{args.root}: split {args.split} has no masks", file=sys.stderr)
            return 2
        results = score_folders(dataset, folders, ignore)
    except DatasetError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    names = list(dataset.class_names)
    commit = git_commit()
    machine = describe_machine()
    report: list[dict[str, Any]] = []
    for folder, result in zip(folders, results):
        m = result["metrics"]
        rows = breakdown(result["confusion"], names)
        print(
            f"### {folder}\n\nsplit {args.split} of {args.root} ({len(dataset)} images): mIoU "
            f"{100 * m['miou']:.1f} % (uncertain = background), confident mIoU {100 * m['confident_miou']:.1f} %, "
            f"coverage {100 * m['coverage']:.1f} %; config {args.config}, commit {commit}, {machine}\n\n"
            + format_table(rows)
            + "\n"
        )
        report.append({
            "labels": str(folder), "miou": m["miou"], "confident_miou": m["confident_miou"],
            "coverage": m["coverage"], "iou": dict(zip(names, m["iou"])), "rows": rows,
            "confusion": {"rows": names, "columns": [*names, "uncertain"], "counts": result["confusion"].tolist()},
        })  # fmt: skip
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "root": args.root, "split": args.split, "config": args.config, "commit": commit,
            "machine": machine, "images": len(dataset), "class_names": names, "outcomes": list(OUTCOMES),
            "folders": report,
        }  # fmt: skip
        out.write_text(json.dumps(to_jsonable(payload), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
