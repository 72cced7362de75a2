"""Forward+backward time of backbones on the CPU in NCHW vs channels_last.

Usage::

    PYTHONPATH=src python3 benchmarks/bench_channels_last.py \
        [--models efficientnet_lite0:16 small_cnn:8] [--sizes 224 112] [--batch 8] [--iters 3]

Each ``name:os`` is a registered backbone and its output stride. For every model and input
size it times ``loss = backbone(x).mean(); loss.backward()`` in training mode, after one
warm-up iteration, with the weights and input in NCHW and in channels_last (alternating
iteration by iteration, so that load changes on a shared machine hit both), and prints
a table of the median and best time per iteration. Random weights: the speed does not
depend on their values.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dscnet.models.backbones import build_backbone  # noqa: E402
from dscnet.utils.machine import cpu_model  # noqa: E402


def time_pair(
    name: str, output_stride: int, size: int, batch: int, iters: int
) -> tuple[list[float], list[float]]:
    """Seconds per forward+backward iteration in NCHW and in channels_last.

    The two layouts alternate iteration by iteration so that a change in the machine's load
    (it is shared) affects both alike; each gets one untimed warm-up iteration first.
    """
    torch.manual_seed(0)
    nets = {
        fmt: build_backbone(name, output_stride=output_stride, channels_last=fmt).train()
        for fmt in (False, True)
    }
    x = torch.randn(batch, 3, size, size)
    times: dict[bool, list[float]] = {False: [], True: []}
    for i in range(iters + 1):
        for fmt, net in nets.items():
            net.zero_grad(set_to_none=True)
            start = time.perf_counter()
            net(x).mean().backward()
            if i > 0:  # the first iteration pays for allocation and kernel selection
                times[fmt].append(time.perf_counter() - start)
    return times[False], times[True]


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["efficientnet_lite0:16", "small_cnn:8"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[224, 112])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    print(
        f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC | {platform.machine()} | {cpu_model()}"
    )
    print(
        f"# torch {torch.__version__} | threads {torch.get_num_threads()} | "
        f"batch {args.batch} | {args.iters} timed iterations after 1 warm-up | "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(
        "| backbone | OS | input | NCHW median (best) s | channels_last median (best) s | speed-up |"
    )
    print("|---|---|---|---|---|---|")
    for spec in args.models:
        name, _, stride = spec.partition(":")
        output_stride = int(stride or 16)
        for size in args.sizes:
            nchw, cl = time_pair(name, output_stride, size, args.batch, args.iters)
            a, b = statistics.median(nchw), statistics.median(cl)
            print(
                f"| {name} | {output_stride} | {size} px | {a:.3f} ({min(nchw):.3f}) | "
                f"{b:.3f} ({min(cl):.3f}) | {a / b:.2f}x |",
                flush=True,
            )


if __name__ == "__main__":
    main()
