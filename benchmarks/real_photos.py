"""The real-photo table: B, DSCNet, DSCNet + second stage and full supervision, over seeds.

Usage::

    python benchmarks/real_photos.py [--root ../shared/data/msrc-dev] [--seeds 5] [--workers 2]
        [--out runs/real_photos] [--rows B,DSCNet,stage2,full] [--reference 80.2]
        [--stage2-config real_cpu_stage2] [--no-ms-crf] [key=value ...]

On a VOC-layout folder of real photographs (default: the msrc-dev split of MSRC-v2, read from
``../shared/data/msrc-dev`` when it is there; obtain MSRC-v2 from Microsoft Research and
write it in VOC layout to use your own copy), with ``configs/real_cpu.yaml``:

1. trains B and DSCNet from the image tags, ``--seeds`` seeds each, ``--workers`` at a time
   (one torch thread each), and scores CAMs and pseudo labels on the train split and the
   segmentation on the val split (single scale);
2. exports each DSCNet run's train-split pseudo labels with multi-scale + flip CAMs
   (``cam.export_scales``) and the dense CRF (``dscnet pseudo --ms --crf``) and trains the
   second stage on them as masks with ``--stage2-config`` (``configs/real_cpu_stage2.yaml``:
   ``train.supervision=full``, 600 steps, uncertain pixels read as background) plus
   ``data.pseudo_masks=...``, from the ImageNet weights;
3. trains the same network on the true masks (``train.supervision=full``);
4. scores every segmentation again with multi-scale + flip + CRF (``dscnet eval --ms --crf``;
   ``--no-ms-crf`` leaves that column empty).

It prints one markdown table (mean ± std over seeds) with the machine, the commit and the
wall time of each phase, and writes it with every number to ``<out>/real_photos.{md,json}``.
Finished runs are reused: a run whose directory holds the same config and its final metrics
is read back, not trained or evaluated again, and an interrupted run resumes from its
``last.pth``; exported labels and MS+flip+CRF scores are kept next to their runs. Running the
same command again after an interruption (or with more ``--seeds``) does only what is missing.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from dscnet.cli.cmd_ablate import row_overrides
from dscnet.config import apply_overrides, load_config, typed
from dscnet.engine.experiment import Job, run_jobs
from dscnet.utils.machine import describe_machine, git_commit

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "msrc-dev"
ROWS = ("B", "DSCNet", "stage2", "full")
LABELS = {
    "B": "B (tags only)",
    "DSCNet": "DSCNet (tags only)",
    "stage2": "DSCNet + second stage (tags only)",
    "full": "full supervision (true masks)",
}


def _mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.1f} ± {100 * std:.1f}"


def _job(cfg: DictConfig, name: str, seed: int, work_dir: Path, what: tuple[str, ...], extra: list[str]) -> Job:
    run = apply_overrides(cfg, [*extra, f"experiment.seed={seed}", f"experiment.work_dir={work_dir}"])
    return Job(OmegaConf.to_container(run, resolve=True), name, seed, what, "auto")


class OtherRunError(Exception):
    """A job's run directory holds a run of another config (it would be resumed, or lost)."""


def _saved_config(run_dir: Path) -> dict[str, Any] | None:
    """The config a run directory was trained with, through the schema (``None``: no run).

    A run saved before a key existed gets that key's default, which is what it ran with (a
    key added since must default to the old behaviour)."""
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        return None
    return OmegaConf.to_container(typed(OmegaConf.load(saved), str(saved)), resolve=True)


def _finished(job: Job) -> dict[str, Any] | None:
    """A run this benchmark finished before with the same config: its final metrics from disk.

    Reused only when its saved ``config.yaml`` equals the job's and every metric asked for
    was written (``eval/final/<what>/metrics.json``); otherwise the run is trained (or
    resumed) and evaluated again.
    """
    run_dir = Path(job.cfg["experiment"]["work_dir"])
    files = [run_dir / "eval" / "final" / w / "metrics.json" for w in job.what]
    if not all(f.is_file() for f in files) or _saved_config(run_dir) != job.cfg:
        return None
    metrics = {w: json.loads(f.read_text()) for w, f in zip(job.what, files)}
    return {"name": job.name, "seed": job.seed, "run_dir": str(run_dir), "metrics": metrics, "reused": True}


def _run(jobs: list[Job], workers: int) -> list[dict[str, Any]]:
    """Train and evaluate the jobs not finished before; reuse the finished ones as they are."""
    done = {i: res for i, job in enumerate(jobs) if (res := _finished(job)) is not None}
    todo = [job for i, job in enumerate(jobs) if i not in done]
    for job in todo:
        # Same config: an interrupted run, resumed. Another config: never resumed nor replaced.
        run_dir = Path(job.cfg["experiment"]["work_dir"])
        saved = _saved_config(run_dir)
        if saved is not None and saved != job.cfg:
            raise OtherRunError(
                f"{run_dir}: holds a run of another config ({_first_difference(saved, job.cfg)}); "
                "move it away or pass another --out"
            )
    return list(done.values()) + (run_jobs(todo, workers=workers) if todo else [])


def _first_difference(saved: dict[str, Any], wanted: dict[str, Any], prefix: str = "") -> str:
    """The first key whose value differs, as ``key: saved -> wanted``."""
    for key in sorted(set(saved) | set(wanted)):
        a, b = saved.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            if a != b:
                return _first_difference(a, b, f"{prefix}{key}.")
        elif a != b:
            return f"{prefix}{key}: {a!r} -> {b!r}"
    return "none"


def _export(task: tuple[str, str]) -> str:
    """Export a run's train-split pseudo labels with MS + flip + CRF (one worker process)."""
    from dscnet.data.build import build_dataset
    from dscnet.inference.crf import CrfParams
    from dscnet.inference.pseudo_export import export_pseudo_labels
    from dscnet.models.loading import load_model_from_checkpoint

    checkpoint, out = task
    torch.set_num_threads(1)
    if (Path(out) / "pseudo_metrics.json").is_file():
        return out
    model, cfg, _ = load_model_from_checkpoint(checkpoint)
    dataset = build_dataset(cfg, cfg.data.train_split, train=False)
    export_pseudo_labels(
        model, dataset, out, cfg, ms=True, crf=CrfParams.from_any(cfg.eval.crf), progress=False,
    )  # fmt: skip
    return out


def _ms_crf(run_dir: str) -> float:
    """Segmentation mIoU on the val split with multi-scale + flip + CRF, kept in
    ``<run>/eval/seg_ms_crf.json`` (and read from there when the checkpoint is not newer). In
    this process: the CRF spreads each batch over worker processes itself (which a pool
    worker may not start)."""
    from dscnet.data.build import build_dataset
    from dscnet.engine.evaluate import evaluate
    from dscnet.models.loading import load_model_from_checkpoint

    checkpoint = Path(run_dir) / "checkpoints" / "last.pth"
    cached = Path(run_dir) / "eval" / "seg_ms_crf.json"
    if cached.is_file() and cached.stat().st_mtime >= checkpoint.stat().st_mtime:
        return float(json.loads(cached.read_text())["miou"])
    model, cfg, _ = load_model_from_checkpoint(str(checkpoint))
    dataset = build_dataset(cfg, cfg.data.val_split, train=False)
    result = evaluate(model, dataset, cfg, what="seg", scales=tuple(cfg.eval.ms_scales), flip=True, crf=True)
    miou = float(result.metrics["miou"])
    cached.write_text(json.dumps({"miou": miou, "scales": list(cfg.eval.ms_scales), "flip": True, "crf": True}))
    return miou


def _pool_map(fn, tasks: list, workers: int) -> list:
    if workers > 1 and len(tasks) > 1:
        with mp.get_context("spawn").Pool(min(workers, len(tasks))) as pool:
            return pool.map(fn, tasks)
    return [fn(t) for t in tasks]


def format_table(table: dict[str, dict[str, list[float]]], reference: float | None, seeds: int) -> str:
    """The markdown table: one row per setting, mean ± std over seeds."""
    head = "| | CAM (train) | pseudo labels (train) | seg raw (val) | seg MS+flip+CRF (val) |"
    lines = [head, "|---|---|---|---|---|"]
    for row, cols in table.items():
        cells = [_mean_std(cols.get(k, [])) for k in ("cam", "pseudo", "seg", "seg_ms_crf")]
        lines.append(f"| {LABELS[row]} | " + " | ".join(cells) + " |")
    full = table.get("full", {}).get("seg")
    notes = [f"mean ± std over {seeds} seeds; mIoU in %."]
    # Paired by seed: the second stage of seed s learned from the labels of DSCNet seed s.
    for what, (a, b), key in (
        ("DSCNet − B", ("DSCNet", "B"), "seg"), ("DSCNet − B", ("DSCNet", "B"), "pseudo"),
        ("second stage − DSCNet", ("stage2", "DSCNet"), "seg"),
        ("exported − online labels", ("stage2", "DSCNet"), "pseudo"),
    ):  # fmt: skip
        x, y = table.get(a, {}).get(key), table.get(b, {}).get(key)
        if x and y and len(x) == len(y):
            notes.append(f"{what} ({key}, paired by seed): {_mean_std([i - j for i, j in zip(x, y)])}")
    for row, name in (("DSCNet", "online"), ("stage2", "exported")):
        cov = table.get(row, {}).get("coverage")
        if cov:
            notes.append(f"coverage of the {name} labels (share not uncertain): {_mean_std(cov)}")
    for row in ("DSCNet", "stage2"):
        seg = table.get(row, {}).get("seg")
        if seg and full:
            notes.append(f"{LABELS[row]} raw / full supervision raw = {statistics.fmean(seg) / statistics.fmean(full):.3f}")
        if seg and reference:
            notes.append(f"{LABELS[row]} raw / reference {reference:.1f} = {100 * statistics.fmean(seg) / reference:.3f}")
    if full and reference:
        notes.append(f"full supervision raw / reference {reference:.1f} = {100 * statistics.fmean(full) / reference:.3f}")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes)


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(DEFAULT_ROOT), help="VOC-layout folder (default: ../shared/data/msrc-dev)")
    parser.add_argument("--config", default="real_cpu")
    parser.add_argument("--stage2-config", default="real_cpu_stage2", help="config of the second stage")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="runs/real_photos")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"subset of {', '.join(ROWS)}")
    parser.add_argument("--reference", type=float, default=None, help="a reference mIoU (%%) to compare with")
    parser.add_argument("--no-ms-crf", action="store_true", help="skip the MS+flip+CRF column (the slowest phase)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    rows = [r for r in args.rows.split(",") if r]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown or not Path(args.root).is_dir():
        print(f"unknown rows {unknown}" if unknown else f"{args.root}: no such folder (--root)", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    common = [f"data.root={args.root}", "train.progress=false", *args.overrides]
    cfg = load_config(args.config, common)
    cfg2 = load_config(args.stage2_config, common)
    seeds = [cfg.experiment.seed + s for s in range(args.seeds)]
    what = ("seg", "cam", "pseudo")
    times: dict[str, float] = {}
    results: dict[str, list[dict[str, Any]]] = {}

    start = time.perf_counter()
    weak = [
        _job(cfg, row, seed, out / row / f"seed{seed}", what, row_overrides(row))
        for row in ("B", "DSCNet") if row in rows or (row == "DSCNet" and "stage2" in rows)
        for seed in seeds
    ]  # fmt: skip
    for res in _run(weak, args.workers):
        results.setdefault(res["name"], []).append(res)
    times["B + DSCNet"] = time.perf_counter() - start

    if "stage2" in rows:
        start = time.perf_counter()
        tasks = [(str(out / "DSCNet" / f"seed{s}" / "checkpoints" / "last.pth"), str(out / "DSCNet" / f"seed{s}" / "pseudo_ms_crf")) for s in seeds]
        exported = _pool_map(_export, tasks, args.workers)
        stage2 = [
            _job(cfg2, "stage2", seed, out / "stage2" / f"seed{seed}", ("seg",),
                 ["train.supervision=full", f"data.pseudo_masks={folder}"])
            for seed, folder in zip(seeds, exported)
        ]  # fmt: skip
        results["stage2"] = _run(stage2, args.workers)
        for res, folder in zip(sorted(results["stage2"], key=lambda r: r["seed"]), exported):
            metrics = json.loads((Path(folder) / "pseudo_metrics.json").read_text())
            # The exported labels' score and coverage.
            res["metrics"]["pseudo"] = {"miou": metrics["miou"], "coverage": metrics["coverage"]}
        times["second stage (export + train)"] = time.perf_counter() - start
    if "full" in rows:
        start = time.perf_counter()
        full = [_job(cfg, "full", seed, out / "full" / f"seed{seed}", ("seg",), ["train.supervision=full"]) for seed in seeds]
        results["full"] = _run(full, args.workers)
        times["full supervision"] = time.perf_counter() - start

    start = time.perf_counter()
    runs = [(row, res) for row in rows for res in sorted(results.get(row, []), key=lambda r: r["seed"])]
    if not args.no_ms_crf:
        scores = [_ms_crf(res["run_dir"]) for _, res in runs]
        for (_, res), score in zip(runs, scores):
            res["metrics"]["seg_ms_crf"] = {"miou": score}
        times["MS+flip+CRF evaluation"] = time.perf_counter() - start

    table = {
        row: {key: [r["metrics"][key]["miou"] for r in sorted(results[row], key=lambda r: r["seed"]) if key in r["metrics"]]
              for key in ("cam", "pseudo", "seg", "seg_ms_crf")}
        for row in rows if row in results
    }  # fmt: skip
    for row, cols in table.items():
        cov = [r["metrics"]["pseudo"]["coverage"] for r in sorted(results[row], key=lambda r: r["seed"])
               if "coverage" in r["metrics"].get("pseudo", {})]  # fmt: skip
        if cov:
            cols["coverage"] = cov
    machine = describe_machine()
    text = (
        f"real photographs: {args.root}, config {args.config}, {len(seeds)} seeds, commit {git_commit()}, {machine}\n\n"
        + format_table(table, args.reference, len(seeds))
        + "\n\nwall time: " + "; ".join(f"{k} {v / 60:.1f} min" for k, v in times.items())
        + f" ({args.workers} runs at a time)\n"
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "real_photos.md").write_text(text)
    (out / "real_photos.json").write_text(json.dumps({"table": table, "times_s": times, "runs": results}, indent=2, default=str))
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring); exit status 2 on a bad folder or row, or when a
    run directory holds a run of another config."""
    try:
        return _main(argv)
    except OtherRunError as exc:
        print(exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
