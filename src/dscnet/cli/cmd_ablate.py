"""``dscnet ablate``: the ablation table of METHOD.md §2 (B, +PGCL, +SGCL, both, DSCNet).

Every row is the same code path with different switches, trained on the same data and seeds.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from dscnet.cli.common import add_config_args, config_from_args
from dscnet.config import apply_overrides
from dscnet.data.build import build_dataset
from dscnet.engine.checkpoint import load_model_from_checkpoint
from dscnet.engine.distributed import init_distributed
from dscnet.engine.experiment import train_and_evaluate
from dscnet.errors import ConfigError
from dscnet.losses.dscl import DSCLObjective
from dscnet.utils.io import atomic_write_text
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
    p.set_defaults(func=run)


def row_overrides(row: str) -> list[str]:
    """Config overrides that switch the streams of an ablation row."""
    pgcl, sgcl, cross = ROWS[row]
    return [
        f"loss.pgcl.enabled={str(pgcl).lower()}",
        f"loss.sgcl.enabled={str(sgcl).lower()}",
        f"loss.cross.enabled={str(cross).lower()}",
    ]


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def format_table(results: dict[str, dict[str, list[float]]], seeds: int) -> str:
    """Markdown table: mean ± std (in mIoU %) per row and the step time relative to B."""
    base_time = statistics.fmean(results["B"]["step_seconds"]) if "B" in results else None
    head = "| row | " + " | ".join(f"{label} mIoU" for _, label in METRICS) + " | step time vs B |"
    lines = [head, "|" + "---|" * (len(METRICS) + 2)]
    for row, vals in results.items():
        cells = []
        for key, _ in METRICS:
            mean, std = _mean_std(vals[key])
            cells.append(f"{100 * mean:.2f} ± {100 * std:.2f}")
        rel = statistics.fmean(vals["step_seconds"]) / base_time if base_time else float("nan")
        lines.append(f"| {row} | " + " | ".join(cells) + f" | {rel:.2f}× |")
    lines.append("")
    lines.append(f"mean ± std over {seeds} seed(s); validation split, single scale, no CRF.")
    return "\n".join(lines)


def _train_one(job: tuple[dict, str, int]) -> dict:
    """Train and evaluate one (row, seed); runs in a worker process when ``--workers > 1``."""
    from omegaconf import OmegaConf

    cfg_dict, row, seed = job
    if mp.current_process().name != "MainProcess":
        torch.set_num_threads(1)  # one core per worker: threads of parallel runs only contend
    cfg = OmegaConf.create(cfg_dict)
    ctx = init_distributed(cfg.experiment.device)
    summary = train_and_evaluate(cfg, ctx)
    return {
        "row": row,
        "seed": seed,
        "run_dir": str(summary.result.run_dir),
        "step_seconds": summary.step_seconds,
        **{key: summary.metrics[key]["miou"] for key, _ in METRICS},
    }


class _RunView:
    """What :func:`write_cam_comparison` reads of a trainer, rebuilt from a run's checkpoint."""

    def __init__(self, run_dir: Path) -> None:
        self.model, self.cfg, self.class_names = load_model_from_checkpoint(run_dir / "checkpoints" / "last.pth")
        self.device = torch.device("cpu")
        self.objective = DSCLObjective(self.cfg, len(self.class_names) - 1)
        self.val_set = build_dataset(self.cfg, self.cfg.data.val_split, train=False)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise ConfigError(f"unknown ablation rows {unknown}; choose from {list(ROWS)}")
    out = Path(args.out)
    base_seed = int(cfg.experiment.seed)
    jobs = []
    for row in rows:
        for s in range(args.seeds):
            seed = base_seed + s
            run_cfg = apply_overrides(
                cfg,
                [*row_overrides(row), f"experiment.seed={seed}", f"experiment.work_dir={out / row / f'seed{seed}'}"],
            )
            jobs.append((OmegaConf.to_container(run_cfg, resolve=True), row, seed))
    start = time.perf_counter()
    print(f"ablation: {len(rows)} rows x {args.seeds} seeds = {len(jobs)} runs, {args.workers} at a time")
    if args.workers > 1:
        with mp.get_context("spawn").Pool(args.workers, maxtasksperchild=1) as pool:
            done = []
            for res in pool.imap_unordered(_train_one, jobs):
                done.append(res)
                _print_run(res)
    else:
        done = []
        for job in jobs:
            done.append(_train_one(job))
            _print_run(done[-1])
    results: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        mine = sorted((r for r in done if r["row"] == row), key=lambda r: r["seed"])
        results[row] = {key: [r[key] for r in mine] for key in ("cam", "pseudo", "seg", "step_seconds")}
    table = format_table(results, args.seeds)
    atomic_write_text(out / "ablation.json", json.dumps({"seeds": args.seeds, "results": results, "runs": done}, indent=2))
    atomic_write_text(out / "ablation.md", table + "\n")
    if "B" in rows and "DSCNet" in rows:
        views = {row: _RunView(out / row / f"seed{base_seed}") for row in ("B", "DSCNet")}
        path = write_cam_comparison(views, out / "cams_B_vs_DSCNet.png")
        print(f"CAM comparison: {path}")
    print(table)
    print(f"({(time.perf_counter() - start) / 60:.1f} min; written to {out})")
    return 0


def _print_run(res: dict) -> None:
    print(
        f"== {res['row']}, seed {res['seed']}: cam {100 * res['cam']:.2f}  pseudo {100 * res['pseudo']:.2f}  "
        f"seg {100 * res['seg']:.2f}  step {1000 * res['step_seconds']:.0f} ms",
        flush=True,
    )
