"""One command for a lent GPU: training, evaluation, prediction and export at VOC size.

Usage::

    python benchmarks/device_check.py                  # one CUDA GPU; about 3-5 min, <= 8 min
    python benchmarks/device_check.py --json out.json  # also write every number
    python benchmarks/device_check.py --quick          # CPU, tiny sizes, fp32 (~10 s; the
                                                       # test suite runs it, so it cannot rot)
    python benchmarks/device_check.py --device cpu --steps 1 --warmup 0 --images 1
                                                       # the full sizes on a CPU, fp32: a dry run

What it measures, on synthetic scenes at VOC size (512 px, nothing to download; random
weights: speed does not depend on them) with the ``voc_vit`` config (ViT-B/16, 448 px crops,
batch 4 = 2 groups x 2 images, every loss term on from the first step):

1. B and DSCNet training steps in bf16 and fp16: images/s and ms/step, timed between device
   synchronisations after warm-up steps, peak GPU memory, and the DSCNet/B step ratio (the
   issue's target on a GPU: <= 1.15x);
2. host-device syncs of one DSCNet step, from ``torch.cuda.set_sync_debug_mode`` and from
   dscnet's own ``HostSyncCounter`` (the count ``tests/engine/test_host_syncs.py`` pins);
3. evaluation images/s: segmentation at one scale and multi-scale + flip
   (``eval.ms_scales``), online pseudo labels (CAM + PAR); ``predict`` images/s (500 x 375
   PNGs in, palette PNGs out);
4. ONNX export of the segmentation network (on the CPU, so the onnxruntime check compares
   like with like): seconds, and the check at another, odd size.

It prints one Markdown table (paste it into docs/BENCHMARKS.md). A section that fails is
reported in its row and the command exits 1 after the others have run.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_train import ROWS, use_synthetic_splits  # noqa: E402

from dscnet.config import load_config  # noqa: E402
from dscnet.data.subset import eval_subset  # noqa: E402
from dscnet.engine.distributed import init_distributed  # noqa: E402
from dscnet.engine.evaluate import evaluate  # noqa: E402
from dscnet.engine.trainer import Trainer  # noqa: E402
from dscnet.utils.host_sync import HostSyncCounter  # noqa: E402


@dataclass(frozen=True)
class Plan:
    """Sizes of one check: the full GPU one or the quick CPU one."""

    device: str
    precisions: tuple[str, ...]
    overrides: tuple[str, ...]
    steps: int
    warmup: int
    eval_images: int
    predict_images: int
    predict_size: tuple[int, int]  # (width, height)
    export_size: int
    exporter: str  # export_onnx's: "auto" (torch.export-based, as `dscnet export`) or "torchscript"
    label: str


# VOC size: 512 px synthetic scenes (VOC images are at most 500 px), 448 px training crops.
FULL = Plan(
    device="cuda",
    precisions=("bf16", "fp16"),
    overrides=(
        "model.pretrained=null",
        "data.synth.image_size=512",
        "data.synth.num_classes=10",
        "data.synth.num_train=96",
        "data.synth.num_val=16",
    ),
    steps=20,
    warmup=5,
    eval_images=16,
    predict_images=16,
    predict_size=(500, 375),
    export_size=448,
    exporter="auto",
    label="voc_vit, ViT-B/16, 448 px crops of 512 px scenes, batch 4",
)
QUICK = replace(
    FULL,
    device="cpu",
    precisions=("none",),
    overrides=(
        *FULL.overrides,  # the later image size overrides the earlier one
        "model.backbone=small_cnn", "model.output_stride=8", "model.pooling=gap",
        "model.seg_hidden=16", "model.proj_dim=16", "data.num_workers=0",
        "data.synth.image_size=64", "data.synth.num_train=16", "data.synth.num_val=2",
        "data.train_aug.crop_size=48", "cam.par.num_iter=2", "cam.par.dilations=[1,2]",
    ),  # fmt: skip
    steps=2,
    warmup=1,
    eval_images=2,
    predict_images=2,
    predict_size=(61, 45),
    export_size=48,
    exporter="torchscript",  # the dynamo exporter alone takes ~20 s on 2 cores; tests/inference covers it
    label="voc_vit with small_cnn, 48 px crops of 64 px scenes, batch 4 (quick)",
)


@dataclass
class Row:
    """One line of the table."""

    check: str
    precision: str
    images_per_s: float | None = None
    ms: float | None = None
    peak_mib: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    failed: bool = False


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process max RSS


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds of ``fn()`` between two device synchronisations."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _config(plan: Plan, row: str, amp: str, work_dir: str):
    cfg = load_config(
        "voc_vit",
        [
            "data.type=synth",
            *plan.overrides,
            *ROWS[row],
            f"train.amp={amp}",
            f"experiment.device={plan.device}",
            f"experiment.work_dir={work_dir}",
            f"train.max_steps={10**9}",
            "train.cls_warmup_steps=0",
            "loss.contrast_start_step=0",
            "train.progress=false",
        ],
    )
    return use_synthetic_splits(cfg)


def _count_syncs(trainer: Trainer, batches) -> dict[str, Any]:
    """Syncs of one step: CUDA's debug mode (GPU only) and dscnet's dispatch-level counter."""
    cuda = trainer.device.type == "cuda"
    if cuda:
        torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught, HostSyncCounter() as counter:
            warnings.simplefilter("always")
            trainer._train_step(batches)
    finally:
        if cuda:
            torch.cuda.set_sync_debug_mode(0)
    flagged = [w for w in caught if "synchronizing CUDA operation" in str(w.message)]
    return {
        "cuda_debug_mode": len(flagged) if cuda else None,
        "cuda_debug_mode_where": dict(Counter(f"{Path(w.filename).name}:{w.lineno}" for w in flagged)),
        "host_sync_counter": counter.count,
        "host_sync_counter_where": dict(counter.by_location()),
    }


def train_row(plan: Plan, row: str, amp: str) -> tuple[Row, Trainer]:
    """Time ``plan.steps`` steps of ``row`` after ``plan.warmup`` steps."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _config(plan, row, amp, tmp)
        ctx = init_distributed(plan.device)
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(ctx.device)
        trainer = Trainer(cfg, ctx)
        if ctx.device.type == "cuda" and not trainer.loader.pin_memory:
            raise RuntimeError("the training loader does not pin memory on CUDA")
        trainer.model.train()
        batches = iter(trainer.loader)
        for _ in range(plan.warmup):
            trainer._train_step(batches)

        def steps() -> None:
            for _ in range(plan.steps):
                trainer._train_step(batches)

        seconds = _timed(steps, ctx.device) / plan.steps
        batch = int(cfg.data.sampler.groups_per_batch) * int(cfg.data.sampler.group_size)
        result = Row(
            f"train {row}",
            amp if amp != "none" else "fp32",
            images_per_s=batch / seconds,
            ms=1000 * seconds,
            peak_mib=_peak_mib(ctx.device),
        )
        if row == "DSCNet":
            syncs = _count_syncs(trainer, batches)
            result.extra["host_syncs"] = syncs
            cuda = "" if syncs["cuda_debug_mode"] is None else f"{syncs['cuda_debug_mode']} (CUDA debug mode), "
            result.note = f"host syncs per step: {cuda}{syncs['host_sync_counter']} (HostSyncCounter)"
        return result, trainer


def training_rows(plan: Plan) -> tuple[list[Row], Trainer | None]:
    rows: list[Row] = []
    last: Trainer | None = None
    for amp in plan.precisions:
        timed: dict[str, Row] = {}
        for row in ROWS:
            # Free the previous run first: its model and optimiser would count in this peak.
            last = None
            gc.collect()
            try:
                timed[row], last = train_row(plan, row, amp)
                rows.append(timed[row])
            except Exception as exc:  # noqa: BLE001 - report and go on with the other rows
                rows.append(_failure(f"train {row}", amp, exc))
        if len(timed) == 2:
            timed["DSCNet"].extra["ratio"] = timed["DSCNet"].ms / timed["B"].ms
            timed["DSCNet"].note = f"DSCNet/B step {timed['DSCNet'].extra['ratio']:.2f}x; " + timed["DSCNet"].note
    return rows, last


def evaluation_rows(plan: Plan, trainer: Trainer) -> list[Row]:
    """Evaluation and prediction images/s with the last trained model (fp32, no autocast).

    The synthetic images are in memory and the evaluation transform only normalises, so the
    loader runs without workers: starting 8 of them for 16 images would be what is timed.
    """
    cfg, model, device = copy.deepcopy(trainer.cfg), trainer.model, trainer.device
    cfg.data.num_workers = 0
    images, info = eval_subset(trainer.val_set, str(cfg.data.val_split), plan.eval_images)
    ms = tuple(float(s) for s in cfg.eval.ms_scales)
    rows = []
    for check, what, scales, flip in [
        ("evaluate seg, 1 scale", "seg", (1.0,), False),
        (f"evaluate seg, MS+flip {'/'.join(f'{s:g}' for s in ms)}", "seg", ms, True),
        ("evaluate pseudo labels (CAM + PAR)", "pseudo", (1.0,), False),
    ]:
        run = partial(evaluate, model, images, cfg, what=what, scales=scales, flip=flip, device=device)
        try:
            run()  # warm-up
            seconds = _timed(run, device)
            rows.append(Row(check, "fp32", images_per_s=info.images / seconds, note=f"{info.images} images, batch {cfg.eval.batch_size}"))
        except Exception as exc:  # noqa: BLE001
            rows.append(_failure(check, "fp32", exc))
    rows.append(_predict_row(plan, trainer))
    return rows


def _predict_row(plan: Plan, trainer: Trainer) -> Row:
    from dscnet.inference.predict import predict_paths

    check = f"predict, {plan.predict_size[0]}x{plan.predict_size[1]} PNGs in and out"
    try:
        rng = np.random.default_rng(0)
        w, h = plan.predict_size
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "in"
            src.mkdir()
            for i in range(plan.predict_images + 1):
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(src / f"{i:03d}.png")
            paths = sorted(src.glob("*.png"))
            kwargs = dict(
                mean=list(trainer.cfg.data.mean), std=list(trainer.cfg.data.std),
                class_names=trainer.class_names, save_overlay=False, progress=False,
                device=trainer.device,
            )  # fmt: skip
            predict_paths(trainer.model, paths[:1], Path(tmp) / "warm", **kwargs)
            summary = None

            def run() -> None:
                nonlocal summary
                summary = predict_paths(trainer.model, paths[1:], Path(tmp) / "out", **kwargs)

            seconds = _timed(run, trainer.device)
        if summary.ok != plan.predict_images:
            raise RuntimeError(f"predict wrote {summary.ok} of {plan.predict_images} masks: {summary.failed}")
        return Row(check, "fp32", images_per_s=plan.predict_images / seconds, note=f"{plan.predict_images} images")
    except Exception as exc:  # noqa: BLE001
        return _failure(check, "fp32", exc)


def export_row(plan: Plan, trainer: Trainer) -> Row:
    from dscnet.inference.export import export_onnx

    check = "ONNX export (segmentation network)"
    size = plan.export_size
    check_size = (1, 3, size * 3 // 4 + 3, size // 2 + 5)
    try:
        model = copy.deepcopy(trainer.model).float().cpu().eval()
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            path = export_onnx(
                model, Path(tmp) / "model.onnx", example_size=(1, 3, size, size),
                exporter=plan.exporter, check_size=check_size,
            )  # fmt: skip
            seconds = time.perf_counter() - start
            mib = path.stat().st_size / 2**20
        return Row(
            check, "fp32",
            note=f"{seconds:.1f} s with the {plan.exporter} exporter, traced at {size} px, "
            f"checked in onnxruntime at {check_size[2]}x{check_size[3]}; {mib:.0f} MiB",
            extra={"seconds": seconds},
        )  # fmt: skip
    except Exception as exc:  # noqa: BLE001
        return _failure(check, "fp32", exc)


def _failure(check: str, precision: str, exc: BaseException) -> Row:
    traceback.print_exception(exc, file=sys.stderr)
    return Row(check, precision, note=f"FAILED: {type(exc).__name__}: {str(exc)[:200]}", failed=True)


def _fmt(value: float | None, digits: int = 1) -> str:
    """``digits`` decimals, but three significant figures for small values (0.0123)."""
    if value is None:
        return "–"
    return f"{value:.{digits}f}" if abs(value) >= 10 ** (2 - digits) else f"{value:.3g}"


def table(rows: list[Row], device: torch.device) -> str:
    memory = "peak GPU memory (MiB)" if device.type == "cuda" else "max RSS (MiB)"
    lines = [
        f"| check | precision | images/s | ms/step | {memory} | note |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.check} | {r.precision} | {_fmt(r.images_per_s)} | {_fmt(r.ms)} | {_fmt(r.peak_mib, 0)} | {r.note} |"
        )
    return "\n".join(lines)


def environment(device: torch.device) -> dict[str, Any]:
    import timm

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    env = {
        "commit": commit or "n/a",
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            gpu=props.name,
            capability=f"sm_{props.major}{props.minor}",
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            bf16=torch.cuda.is_bf16_supported(),
        )
    else:
        env["cpu"] = platform.processor() or platform.machine()
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CPU, tiny sizes, fp32 (the test suite runs this)")
    parser.add_argument("--json", type=Path, help="also write every number and the environment here")
    parser.add_argument("--device", help="default: cuda (--quick: cpu); AMP rows need CUDA, a CPU runs fp32")
    parser.add_argument("--steps", type=int, help="timed training steps per row (default 20; --quick 2)")
    parser.add_argument("--warmup", type=int, help="untimed steps before them (default 5; --quick 1)")
    parser.add_argument("--images", type=int, help="images for evaluation and predict (default 16; --quick 2)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    device_name = args.device or plan.device
    plan = replace(
        plan,
        device=device_name,
        precisions=plan.precisions if device_name.startswith("cuda") else ("none",),
        steps=plan.steps if args.steps is None else max(1, args.steps),
        warmup=plan.warmup if args.warmup is None else max(0, args.warmup),
        eval_images=plan.eval_images if args.images is None else max(1, args.images),
        predict_images=plan.predict_images if args.images is None else max(1, args.images),
    )
    if plan.device.startswith("cuda") and not torch.cuda.is_available():
        print("device_check: no CUDA device here; use --quick for the CPU check", file=sys.stderr)
        return 2
    start = time.perf_counter()
    device = init_distributed(plan.device).device
    env = environment(device)
    rows, trainer = training_rows(plan)
    if trainer is not None:
        rows += evaluation_rows(plan, trainer)
        rows.append(export_row(plan, trainer))
    else:
        rows.append(Row("evaluation, predict, export", "–", note="FAILED: no training row ran", failed=True))
    env["seconds"] = round(time.perf_counter() - start, 1)

    where = env.get("gpu", env.get("cpu"))
    print(
        f"\ndevice check: {plan.label}; {where}, torch {env['torch']}, timm {env['timm']}, "
        f"commit {env['commit']}; {env['seconds']:.0f} s in all\n"
    )
    print(table(rows, device))
    if args.json:
        args.json.write_text(json.dumps({"environment": env, "rows": [r.__dict__ for r in rows]}, indent=2))
    return 1 if any(r.failed for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
