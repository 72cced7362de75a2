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
