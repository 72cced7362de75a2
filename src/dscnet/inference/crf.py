"""Dense CRF post-processing (Krähenbühl & Koltun) through the optional ``pydensecrf2`` extra.

``pydensecrf2`` is a compiled package (``pip install 'dscnet[crf]'``): it is imported only when
a CRF is actually run, so dscnet imports and works without it, and a missing install gives a
:class:`~dscnet.errors.MissingExtraError` naming the extra.

The CRF runs on the CPU, one image at a time; :func:`crf_map` and :class:`CrfPool` spread a
batch over worker processes so that MS+CRF evaluation streams instead of writing logits to
disk. This module imports only NumPy at the top so worker processes start fast.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields
from multiprocessing import get_context
from types import ModuleType
from typing import Any

import numpy as np

from dscnet.errors import MissingExtraError


@dataclass(frozen=True)
class CrfParams:
    """Dense-CRF parameters; defaults are docs/METHOD.md §3 (same names as ``eval.crf``)."""

    iterations: int = 10
    pos_xy_std: float = 3
    pos_weight: float = 3
    bi_xy_std: float = 64
    bi_rgb_std: float = 5
    bi_weight: float = 4

    @classmethod
    def from_any(cls, params: CrfParams | Mapping[str, Any] | None) -> CrfParams:
        """Accept a CrfParams, a dict / DictConfig with (a subset of) the fields, or None."""
        if params is None:
            return cls()
        if isinstance(params, CrfParams):
            return params
        known = {f.name for f in fields(cls)}
        values = {str(k): params[k] for k in params}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown CRF parameter(s) {unknown}; known: {sorted(known)}")
        return cls(**values)


def _densecrf() -> ModuleType:
    """Import ``pydensecrf.densecrf`` or raise MissingExtraError naming the ``crf`` extra."""
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError:
        raise MissingExtraError("dense CRF", "crf", "pydensecrf2") from None
    return dcrf


def require_crf() -> None:
    """Fail early (before a long run starts) when the CRF extra is missing."""
    _densecrf()


def dense_crf(
    image: np.ndarray,
    probs: np.ndarray,
    iterations: int = 10,
    pos_xy_std: float = 3,
    pos_weight: float = 3,
    bi_xy_std: float = 64,
    bi_rgb_std: float = 5,
    bi_weight: float = 4,
) -> np.ndarray:
    """Refine class probabilities with a fully connected CRF.

    Args:
        image: uint8 RGB ``[H, W, 3]`` (the original image, not the normalised tensor).
        probs: ``[K, H, W]`` probabilities (e.g. softmax output), any float dtype.
        iterations: mean-field iterations.
        pos_xy_std, pos_weight: smoothness (Gaussian) kernel: spatial std (pixels), weight.
        bi_xy_std, bi_rgb_std, bi_weight: appearance (bilateral) kernel: spatial std,
            colour std (0..255 units), weight.

    Returns:
        float32 ``[K, H, W]`` refined marginals (each pixel sums to 1).
    """
    dcrf = _densecrf()
    image = np.asarray(image)
    probs = np.asarray(probs)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    if probs.ndim != 3 or probs.shape[1:] != image.shape[:2]:
        raise ValueError(
            f"probs must be [K, H, W] with H, W = {image.shape[:2]}, got shape {probs.shape}"
        )
    from pydensecrf.utils import unary_from_softmax  # same package; present if dcrf is

    k, h, w = probs.shape
    crf = dcrf.DenseCRF2D(w, h, k)
    unary = unary_from_softmax(probs.astype(np.float32, copy=False))
    crf.setUnaryEnergy(np.require(unary, dtype=np.float32, requirements=["C", "W"]))
    crf.addPairwiseGaussian(sxy=float(pos_xy_std), compat=float(pos_weight))
    crf.addPairwiseBilateral(
        sxy=float(bi_xy_std),
        srgb=float(bi_rgb_std),
        # The Cython binding wants a writable buffer; images from PIL are read-only views.
        rgbim=np.require(image, dtype=np.uint8, requirements=["C", "W"]),
        compat=float(bi_weight),
    )
    q = crf.inference(int(iterations))
    return np.asarray(q, dtype=np.float32).reshape(k, h, w)


def _crf_task(
    image: np.ndarray, probs: np.ndarray, params: dict[str, Any], labels: bool
) -> np.ndarray:
    # Module-level so worker processes can unpickle it.
    refined = dense_crf(image, probs, **params)
    if not labels:
        return refined
    return refined.argmax(axis=0).astype(np.uint8 if len(refined) <= 256 else np.int64)


def _default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


class CrfPool:
    """A reusable pool of CRF worker processes for streaming evaluation.

    Create it once per evaluation and call :meth:`map` per batch; ``workers <= 1`` runs in
    the calling process (no pool). Use as a context manager so the workers are shut down::

        with CrfPool(cfg.eval.crf, workers=4) as pool:
            for batch in loader:
                labels = pool.map(images_uint8, probs_list, labels=True)

    Workers use the ``spawn`` start method: forking a process that already runs torch's
    thread pools can deadlock.
    """

    def __init__(
        self,
        params: CrfParams | Mapping[str, Any] | None = None,
        workers: int | None = None,
    ) -> None:
        require_crf()
        self.params = CrfParams.from_any(params)
        self.workers = _default_workers() if workers is None else int(workers)
        self._executor: Executor | None = None
        if self.workers > 1:
            self._executor = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"))

    def map(
        self,
        images: Sequence[np.ndarray],
        probs_list: Sequence[np.ndarray],
        labels: bool = False,
    ) -> list[np.ndarray]:
        """Refine each ``(image, probs)`` pair; returns refined ``[K, H, W]`` probabilities,
        or, with ``labels=True``, their ``[H, W]`` argmax (much less to send between processes).
        """
        if len(images) != len(probs_list):
            raise ValueError(f"{len(images)} images but {len(probs_list)} probability maps")
        params = asdict(self.params)
        if self._executor is None:
            return [_crf_task(im, p, params, labels) for im, p in zip(images, probs_list)]
        futures = [
            self._executor.submit(_crf_task, np.asarray(im), np.asarray(p), params, labels)
            for im, p in zip(images, probs_list)
        ]
        return [f.result() for f in futures]

    def close(self) -> None:
        """Shut the worker processes down."""
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None

    def __enter__(self) -> CrfPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def crf_map(
    images: Sequence[np.ndarray],
    probs_list: Sequence[np.ndarray],
    params: CrfParams | Mapping[str, Any] | None = None,
    workers: int | None = None,
    labels: bool = False,
) -> list[np.ndarray]:
    """One-shot :meth:`CrfPool.map`: refine a list of images in ``workers`` processes.

    ``workers=None`` uses every available CPU, capped by the number of images; for many
    batches keep a :class:`CrfPool` open instead of paying the start-up each time.
    """
    n = len(images)
    workers = min(_default_workers() if workers is None else int(workers), max(n, 1))
    with CrfPool(params, workers=workers) as pool:
        return pool.map(images, probs_list, labels=labels)
