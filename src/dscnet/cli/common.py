"""Pieces shared by the sub-commands."""

from __future__ import annotations

import argparse
import statistics

from omegaconf import DictConfig

from dscnet.config import load_config


def add_config_args(parser: argparse.ArgumentParser, default: str | None = "synth_cpu") -> None:
    """``--config FILE`` plus free ``key.path=value`` overrides."""
    parser.add_argument(
        "--config",
        default=default,
        required=default is None,
        help="YAML config file or the name of a packaged config (synth_cpu, voc_vit, ...)",
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")


def config_from_args(args: argparse.Namespace, extra: list[str] | None = None) -> DictConfig:
    """Load ``args.config`` with the command-line overrides (and ``extra`` ones first)."""
    return load_config(args.config, [*(extra or []), *args.overrides])


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation over seeds or checkpoints (std 0 for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0
