"""Training throughput and peak memory of a config (default: the demo config, synth_cpu).

Usage::

    python benchmarks/bench_train.py [--config synth_cpu] [--steps 60] [--warmup 10]
                                     [--threads N] [--device cpu] [key=value ...]
    # a VOC config on synthetic scenes at VOC size, without the dataset:
    python benchmarks/bench_train.py --config voc_vit --steps 5 --warmup 2 \
        data.type=synth data.synth.image_size=512 data.synth.num_train=64 model.pretrained=null

Builds B and full DSCNet with every loss term on (the warm-ups are set to 0), runs
``--warmup`` untimed steps of each, then times ``--steps`` steps of each, alternating B and
DSCNet step by step (a load change on a shared machine then hits both rows), and prints the
median ms/step, images/s and peak memory (process max RSS on CPU, both models included;
``torch.cuda.max_memory_allocated`` on CUDA). With
``data.type=synth`` the synthetic benchmark's splits (train, val) replace the config's
(VOC's ``train_aug`` does not exist there); on the CPU, ``train.amp=none``. On a GPU, ``benchmarks/device_check.py`` times
steps with device synchronisation and covers AMP, evaluation and export.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import subprocess
import tempfile
import time

import torch
from omegaconf import DictConfig

from dscnet.config import load_config
from dscnet.engine.distributed import init_distributed
from dscnet.engine.trainer import Trainer

ROWS = {
    "B": ["loss.pgcl.enabled=false", "loss.sgcl.enabled=false", "loss.cross.enabled=false"],
    "DSCNet": ["loss.pgcl.enabled=true", "loss.sgcl.enabled=true", "loss.cross.enabled=true"],
}


SYNTH_TYPES = ("synth", "synth_photo")
SYNTH_SPLITS = ("train", "val")


def use_synthetic_splits(cfg: DictConfig) -> DictConfig:
    """With ``data.type`` synthetic, point every split key at the benchmark's own splits.

    A VOC/COCO config names splits (``train_aug``, ``eval.cam_split: train``...) that the
    synthetic benchmark may not have; it has ``train`` and ``val`` only, and no root.
    """
    if cfg.data.type not in SYNTH_TYPES:
        return cfg
    cfg.data.root = None
    if cfg.data.train_split not in SYNTH_SPLITS:
        cfg.data.train_split = "train"
    if cfg.data.val_split not in SYNTH_SPLITS:
        cfg.data.val_split = "val"
    if cfg.eval.get("cam_split") not in (None, *SYNTH_SPLITS):
        cfg.eval.cam_split = "train"
    return cfg


def row_config(config: str, row: str, device: str, overrides: list[str], work_dir: str) -> DictConfig:
    """The config of one row: every loss term on from step 0, no evaluation or checkpoint."""
    cfg = load_config(
        config,
        [
            *ROWS[row],
            f"experiment.work_dir={work_dir}",
            f"experiment.device={device}",
            f"train.max_steps={10**9}",
            "train.cls_warmup_steps=0",
            "loss.contrast_start_step=0",
            "train.progress=false",
            # AMP needs CUDA: a GPU config (voc_vit: bf16) runs fp32 on the CPU.
            *(["train.amp=none"] if device == "cpu" else []),
            *overrides,
        ],
    )
    return use_synthetic_splits(cfg)


def measure(config: str, steps: int, warmup: int, device: str, overrides: list[str]) -> list[dict]:
    """Median time of ``steps`` optimisation steps of every row after ``warmup`` steps.

    The rows' steps alternate (B, DSCNet, B, DSCNet, ...), so that a change of load on a
    shared machine hits both rows alike instead of biasing their ratio.
    """
    with tempfile.TemporaryDirectory() as tmp:
        ctx = init_distributed(device)
        trainers = {row: Trainer(row_config(config, row, device, overrides, f"{tmp}/{row}"), ctx) for row in ROWS}
        batches = {row: iter(t.loader) for row, t in trainers.items()}
        if ctx.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times: dict[str, list[float]] = {row: [] for row in ROWS}
        for step in range(warmup + steps):
            for row, trainer in trainers.items():
                trainer.model.train()
                if ctx.device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                trainer._train_step(batches[row])
                if ctx.device.type == "cuda":
                    torch.cuda.synchronize()
                if step >= warmup:
                    times[row].append(time.perf_counter() - start)
        peak = (
            torch.cuda.max_memory_allocated() / 2**20
            if ctx.device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        )
        results = []
        for row, trainer in trainers.items():
            s = trainer.cfg.data.sampler
            batch = int(s.groups_per_batch) * int(s.group_size)
            median = statistics.median(times[row])
            results.append(
                {"row": row, "ms_per_step": 1000 * median, "images_per_s": batch / median, "peak_mib": peak, "batch": batch}
            )
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="synth_cpu")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"config {args.config}, {args.steps} timed steps after {args.warmup}; commit {commit or 'n/a'}; "
          f"{platform.machine()} {platform.processor() or ''} torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| row | batch | ms/step (median) | images/s | peak memory (MiB) |")
    print("|---|---|---|---|---|")
    results = measure(args.config, args.steps, args.warmup, args.device, args.overrides)
    for r in results:
        print(f"| {r['row']} | {r['batch']} | {r['ms_per_step']:.0f} | {r['images_per_s']:.1f} | {r['peak_mib']:.0f} |")
    print(f"DSCNet / B step time: {results[1]['ms_per_step'] / results[0]['ms_per_step']:.2f}x")
    print("(peak memory: of the process with both rows' models, max RSS on CPU; steps alternate between the rows)")


if __name__ == "__main__":
    main()
