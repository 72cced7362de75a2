"""Counting host-device synchronisations, on any device (CPU included).

On a GPU, an operation whose *result size or value* the host needs (``.item()``,
``bool(tensor)``, boolean-mask indexing, ``nonzero``, ``bincount`` without a known bound...)
makes the CPU wait for every queued kernel: the launch queue drains and the GPU idles while
Python catches up. ``torch.cuda.set_sync_debug_mode`` reports those calls, but only on a GPU.

:class:`HostSyncCounter` is a ``TorchDispatchMode`` that records every aten operation known
to synchronise on CUDA, with the Python line that called it, whatever the device. So a CPU
test can count the syncs of one training step (``tests/engine/test_host_syncs.py``) and a
GPU check can compare the count with ``set_sync_debug_mode`` (``benchmarks/device_check.py``).
Device-to-host copies (``.cpu()``, ``.tolist()``) are no-ops on a CPU tensor and cannot be
seen there; on CUDA tensors they appear as ``_to_copy``/``copy_`` to the CPU.

Calls made from ``torch.optim`` are not counted: the optimisers keep their step counters on
the host (``capturable=False``, the default), so their ``.item()`` never waits for a GPU.
"""

from __future__ import annotations

import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

#: Operations that always wait for the device on CUDA (their output needs a device value).
_ALWAYS_SYNC = {
    aten._local_scalar_dense.default,  # .item(), bool(t), int(t), float(t)
    aten.nonzero.default,
    aten.masked_select.default,
    aten.bincount.default,  # its output length is max(input) + 1: a device value
    aten._unique2.default,
    aten.unique_dim.default,
    aten.unique_consecutive.default,
    aten.repeat_interleave.Tensor,  # without output_size
}
_INDEX_OPS = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default}
_COPY_OPS = {aten._to_copy.default, aten.copy_.default}
_OPTIM = f"{Path(torch.__file__).parent / 'optim'}"


def _is_mask(index: object) -> bool:
    return isinstance(index, torch.Tensor) and index.dtype in (torch.bool, torch.uint8)


def _syncs(func: object, args: tuple, kwargs: dict) -> bool:
    if func in _ALWAYS_SYNC:
        return True
    if func in _INDEX_OPS:
        # A boolean mask index is turned into indices with nonzero (its count is a device value).
        return any(_is_mask(i) for i in (args[1] if len(args) > 1 else ()))
    if func in _COPY_OPS:
        src = args[1] if func is aten.copy_.default else args[0]
        dst_device = args[0].device if func is aten.copy_.default else kwargs.get("device")
        return (
            isinstance(src, torch.Tensor)
            and src.device.type != "cpu"
            and dst_device is not None
            and torch.device(dst_device).type == "cpu"
        )
    return False


@dataclass
class SyncRecord:
    """One synchronising call: the aten operation and the innermost dscnet line above it."""

    op: str
    where: str


class HostSyncCounter(TorchDispatchMode):
    """Record every operation that synchronises the host with a CUDA device.

    Use as a context manager around the code to inspect::

        with HostSyncCounter() as syncs:
            trainer._train_step(batches)
        print(syncs.count, syncs.by_location())

    Args:
        package_root: only frames under this folder name a location (default: the dscnet
            package); a sync raised by torch itself is attributed to the dscnet line that
            called into torch.
    """

    def __init__(self, package_root: Path | None = None) -> None:
        super().__init__()
        self.package_root = package_root or Path(__file__).resolve().parents[1]
        self.records: list[SyncRecord] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: D105
        kwargs = kwargs or {}
        if _syncs(func, args, kwargs):
            where = self._location()
            if where is not None:
                self.records.append(SyncRecord(str(func.overloadpacket.__name__), where))
        return func(*args, **kwargs)

    def _location(self) -> str | None:
        """The innermost dscnet line on the stack; None for a call from ``torch.optim``."""
        root = str(self.package_root)
        stack = traceback.extract_stack()
        if any(_OPTIM in frame.filename for frame in stack):
            return None
        for frame in reversed(stack):
            if frame.filename.startswith(root) and not frame.filename.endswith("host_sync.py"):
                return f"{Path(frame.filename).relative_to(self.package_root.parent)}:{frame.lineno}"
        return "<outside dscnet>"

    @property
    def count(self) -> int:
        """Number of synchronising calls recorded."""
        return len(self.records)

    def by_location(self) -> Counter[str]:
        """``Counter`` of ``"file:line"`` (relative to the package's parent) -> calls."""
        return Counter(r.where for r in self.records)

    def by_op(self) -> Counter[str]:
        """``Counter`` of aten operation name -> calls."""
        return Counter(r.op for r in self.records)
