"""The machine a measurement ran on, as benchmarks print it next to their numbers."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux), else platform.processor() or the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(cwd: str | Path | None = None) -> str:
    """Short hash of the checkout's HEAD (the code a measurement ran), ``unknown`` outside git."""
    import subprocess

    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True, cwd=cwd
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def describe_machine() -> str:
    """``N-thread torch X on CPU (arch)``: the line benchmarks print next to their numbers."""
    import torch

    return f"{torch.get_num_threads()}-thread torch {torch.__version__} on {cpu_model()} ({platform.machine()})"
