"""``dscnet ablate``: the ablation table of docs/METHOD.md §2 (B, +PGCL, +SGCL, both, DSCNet).

Every row is the same code path with different switches, trained on the same data and seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from omegaconf import OmegaConf

from dscnet.cli.common import add_config_args, config_from_args, mean_std
from dscnet.config import apply_overrides
from dscnet.engine.experiment import Job, RunView, run_jobs
from dscnet.errors import ConfigError
from dscnet.utils.io import atomic_write_text, check_output_dir
from dscnet.visualize.examples import write_cam_comparison

ROWS: dict[str, tuple[bool, bool, bool]] = {
    # name: (PGCL, SGCL, cross-stream term)
    "B": (False, False, False),
    "B+PGCL": (True, False, False),
    "B+SGCL": (False, True, False),
    "B+PGCL+SGCL": (True, True, False),
    "DSCNet": (True, True, True),
}
METRICS = (("cam", "CAM"), ("pseudo", "pseudo label"), ("seg", "segmentation"))
WHAT = tuple(key for key, _ in METRICS)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ablate",
        help="train the ablation rows over several seeds and write the table",
        description="Train B, B+PGCL, B+SGCL, B+PGCL+SGCL and DSCNet on the same data for each "
        "seed and write mean ± std of CAM, pseudo-label and segmentation mIoU (val) and the "
        "training step time relative to B.",
    )
    add_config_args(p)
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (0..N-1 + experiment.seed)")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {', '.join(ROWS)}")
    p.add_argument("--out", default="runs/ablate", help="output folder")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="train this many runs at once, each in its own process with one torch thread "
        "(CPU machines: use the number of cores)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="reuse the runs already in --out: each continues from its last.pth, and a finished "
        "run is only evaluated again (e.g. after an interruption, or with new eval.* settings)",
    )
    p.set_defaults(func=run)


def row_overrides(row: str) -> list[str]:
    """Config overrides that switch the streams of an ablation row."""
    pgcl, sgcl, cross = ROWS[row]
    return [
        f"loss.pgcl.enabled={str(pgcl).lower()}",
        f"loss.sgcl.enabled={str(sgcl).lower()}",
        f"loss.cross.enabled={str(cross).lower()}",
    ]


def format_ablation_table(
    results: dict[str, dict[str, list[float]]], seeds: int, splits: dict[str, str] | None = None
) -> str:
    """Markdown table: mean ± std (in mIoU %) per row and the step time relative to B.

    ``splits`` names the split each metric was scored on (``{"cam": "train", ...}``).
    """
    base_time = statistics.fmean(results["B"]["step_seconds"]) if "B" in results else None
    head = "| row | " + " | ".join(f"{label} mIoU" for _, label in METRICS) + " | step time vs B |"
    lines = [head, "|" + "---|" * (len(METRICS) + 2)]
    for row, vals in results.items():
        cells = []
        for key, _ in METRICS:
            mean, std = mean_std(vals[key])
            cells.append(f"{100 * mean:.2f} ± {100 * std:.2f}")
        rel = statistics.fmean(vals["step_seconds"]) / base_time if base_time else float("nan")
        lines.append(f"| {row} | " + " | ".join(cells) + f" | {rel:.2f}× |")
    lines.append("")
    splits = splits or {}
    where = "; ".join(
        f"{label} on {splits[key]}" for key, label in METRICS if key in splits
    ) or "validation split"
    lines.append(f"mean ± std over {seeds} seed(s); {where}; single scale, no CRF.")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise ConfigError(f"unknown ablation rows {unknown}; choose from {list(ROWS)}")
    out = check_output_dir(args.out)
    base_seed = cfg.experiment.seed
    resume = "auto" if args.resume else None
    jobs = []
    for row in rows:
        for s in range(args.seeds):
            seed = base_seed + s
            run_cfg = apply_overrides(
                cfg,
                [*row_overrides(row), f"experiment.seed={seed}", f"experiment.work_dir={out / row / f'seed{seed}'}"],
            )
            jobs.append(Job(OmegaConf.to_container(run_cfg, resolve=True), row, seed, WHAT, resume))
    start = time.perf_counter()
    print(f"ablation: {len(rows)} rows x {args.seeds} seeds = {len(jobs)} runs, {args.workers} at a time")
    done = run_jobs(jobs, workers=args.workers, on_done=_print_run)
    results: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        mine = sorted((r for r in done if r["name"] == row), key=lambda r: r["seed"])
        results[row] = {key: [r["metrics"][key]["miou"] for r in mine] for key in WHAT}
        results[row]["step_seconds"] = [r["step_seconds"] for r in mine]
    table = format_ablation_table(results, args.seeds, done[0].get("splits") if done else None)
    atomic_write_text(out / "ablation.json", json.dumps({"seeds": args.seeds, "results": results, "runs": done}, indent=2))
    atomic_write_text(out / "ablation.md", table + "\n")
    if "B" in rows and "DSCNet" in rows:
        views = {row: RunView(out / row / f"seed{base_seed}") for row in ("B", "DSCNet")}
        path = write_cam_comparison(views, out / "cams_B_vs_DSCNet.png")
        print(f"CAM comparison: {path}")
    print(table)
    print(f"({(time.perf_counter() - start) / 60:.1f} min; written to {out})")
    return 0


def _print_run(res: dict) -> None:
    m = res["metrics"]
    print(
        f"== {res['name']}, seed {res['seed']}: cam {100 * m['cam']['miou']:.2f}  "
        f"pseudo {100 * m['pseudo']['miou']:.2f}  seg {100 * m['seg']['miou']:.2f}  "
        f"step {1000 * res['step_seconds']:.0f} ms",
        flush=True,
    )
