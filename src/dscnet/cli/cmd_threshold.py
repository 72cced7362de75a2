"""``dscnet threshold``: pick the pseudo labels' background threshold on a split with masks."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from functools import partial

from dscnet.cam.labeler import Thresholds, build_export_labeler
from dscnet.cli.common import mean_std
from dscnet.config import apply_overrides
from dscnet.data.build import build_dataset
from dscnet.engine.threshold_sweep import SWEEP_MODES, sweep_bg_threshold
from dscnet.errors import ConfigError
from dscnet.inference.crf import CrfParams, dense_crf, require_crf
from dscnet.models.loading import load_model_from_checkpoint
from dscnet.utils.device import resolve_device
from dscnet.utils.io import atomic_write_text, check_output_file

DEFAULT_THRESHOLDS = "0.25,0.30,0.35,0.40,0.45,0.50,0.55"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "threshold",
        help="sweep the background threshold of the pseudo labels over checkpoints",
        description="Score the pseudo labels (or CAMs) of one or more checkpoints at several "
        "background thresholds, the uncertain band moving with each, and print mean ± std over "
        "the checkpoints with the overrides of the best one. Choose on the baseline's "
        "checkpoints: the choice is then fair to the baseline.",
    )
    p.add_argument("--checkpoint", nargs="+", required=True, help=".pth files written by dscnet train (e.g. one per seed)")
    p.add_argument("--split", default=None, help="split with masks (default: eval.cam_split, else the val split)")
    p.add_argument("--thresholds", default=DEFAULT_THRESHOLDS, help=f"comma-separated candidates (default {DEFAULT_THRESHOLDS})")
    p.add_argument("--band", type=float, default=0.1, help="half-width of the uncertain band around each threshold (0: no band)")
    p.add_argument("--what", default="pseudo", choices=SWEEP_MODES, help="pseudo: CAM -> PAR -> thresholds; cam: CAMs alone")
    p.add_argument("--ms", action="store_true", help="sweep the exported labels' rule: CAMs over cam.export_scales (+ flips), as dscnet pseudo --ms (pseudo only)")
    p.add_argument("--crf", action="store_true", help="sweep the exported labels' CRF rule, as dscnet pseudo --crf (pseudo only; one CRF run per image and threshold)")
    p.add_argument("--json", default=None, help="also write every score to this file")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of each checkpoint's config (e.g. data.root=...)")
    p.set_defaults(func=run)


def parse_thresholds(text: str) -> list[float]:
    """``"0.3,0.4"`` -> ``[0.3, 0.4]``; a ConfigError names the bad entry."""
    values = []
    for item in text.split(","):
        try:
            values.append(float(item))
        except ValueError:
            raise ConfigError(f"--thresholds: '{item}' is not a number (expected e.g. 0.3,0.35,0.4)") from None
        Thresholds.around(values[-1], 0.0)  # range check with a clear message
    return values


def summarise(per_checkpoint: list[list[dict]]) -> list[dict]:
    """Mean and std over checkpoints of each threshold's scores (same thresholds in each)."""
    rows = []
    for i, first in enumerate(per_checkpoint[0]):
        row = {k: first[k] for k in ("bg_threshold", "low", "high")}
        for key in (k for k in first if k not in row):  # first's order: stable JSON
            row[key], row[f"{key}_std"] = mean_std([100 * scores[i][key] for scores in per_checkpoint])
        rows.append(row)
    return rows


def format_sweep(rows: list[dict], what: str, n: int) -> str:
    """Markdown table of the summary, the best threshold in bold."""
    best = max(range(len(rows)), key=lambda i: rows[i]["miou"])
    pseudo = what == "pseudo"
    head = f"| bg threshold | band | {what} mIoU |" + (" confident mIoU | coverage |" if pseudo else "")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for i, r in enumerate(rows):
        t = f"**{r['bg_threshold']:.2f}**" if i == best else f"{r['bg_threshold']:.2f}"
        cells = [t, f"{r['low']:.2f}–{r['high']:.2f}" if pseudo else "–", f"{r['miou']:.2f} ± {r['miou_std']:.2f}"]
        if pseudo:
            cells += [f"{r['confident_miou']:.2f} ± {r['confident_miou_std']:.2f}", f"{r['coverage']:.1f} %"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"\nmean ± std over {n} checkpoint(s).")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    thresholds = parse_thresholds(args.thresholds)
    if (args.ms or args.crf) and args.what != "pseudo":
        raise ConfigError("--ms and --crf sweep the exported pseudo labels: use them with --what pseudo")
    if args.crf:
        require_crf()
    if args.band < 0:
        raise ConfigError(f"--band must be >= 0 (half-width of the uncertain band), got {args.band}")
    if args.json:
        check_output_file(args.json, "--json file")
    device = resolve_device(args.device)
    per_checkpoint, names = [], None
    for path in args.checkpoint:
        model, cfg, class_names = load_model_from_checkpoint(path, device=device)
        cfg = apply_overrides(cfg, args.overrides)
        if names is not None and class_names != names:
            raise ConfigError(f"{path}: its classes differ from those of {args.checkpoint[0]}")
        names = class_names
        split = args.split or cfg.eval.cam_split or cfg.data.val_split
        dataset = build_dataset(cfg, split, train=False)
        if not dataset.has_masks:
            raise ConfigError(f"split '{split}' has no ground-truth masks: nothing to score the thresholds on")
        print(f"{path}: {len(thresholds)} thresholds on '{split}' ({len(dataset)} images)", flush=True)
        labeler = build_export_labeler(cfg, args.ms) if args.ms or args.crf else None
        crf = partial(dense_crf, **asdict(CrfParams.from_any(cfg.eval.crf))) if args.crf else None
        per_checkpoint.append(
            sweep_bg_threshold(
                model, dataset, cfg, thresholds, band=args.band, what=args.what, device=device,
                labeler=labeler, crf=crf,
            )
        )
    rows = summarise(per_checkpoint)
    print(format_sweep(rows, args.what, len(per_checkpoint)))
    best = max(rows, key=lambda r: r["miou"])
    band = f" cam.low={best['low']:g} cam.high={best['high']:g}" if args.what == "pseudo" else ""
    print(f"best: cam.bg_threshold={best['bg_threshold']:g}{band}")
    if args.json:
        payload = {"checkpoints": list(args.checkpoint), "what": args.what, "band": args.band,
                   "summary": rows, "per_checkpoint": per_checkpoint}
        atomic_write_text(args.json, json.dumps(payload, indent=2))
    return 0
