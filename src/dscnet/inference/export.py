"""Export the segmentation network (backbone + segmentation head) to ONNX or TorchScript.

Only ``model.segment`` is exported (docs/METHOD.md §3: inference runs no groups, graph or memory):
input ``images`` ``[B, 3, H, W]`` normalised with the training ``data.mean/std``, output
``seg_logits`` ``[B, C+1, H, W]``. Batch, height and width are dynamic; every export is
checked by running it at a *different* size than the example it was traced with and
comparing with PyTorch, so a graph that baked in the example's size is caught at export
time rather than in production.

ONNX export needs the ``export`` extra (``onnx``, ``onnxruntime``; ``onnxscript`` for the
torch.export-based exporter); it is imported only when used.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from dscnet.errors import DscnetError, MissingExtraError
from dscnet.utils.io import atomic_save, writing

Exporter = Literal["auto", "dynamo", "torchscript"]
# Models above this many bytes of weights keep them in a side file (ONNX protobufs cap at 2 GB).
_EXTERNAL_DATA_BYTES = 1_800_000_000


class SegmentWrapper(nn.Module):
    """``forward(images) = model.segment(images)``: the inference graph as a plain module."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.segment(images)


def _example(size: Sequence[int], like: nn.Module, seed: int = 0) -> torch.Tensor:
    if len(size) != 4 or int(size[1]) != 3:
        raise ValueError(f"example size must be (B, 3, H, W), got {tuple(size)}")
    param = next(like.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    g = torch.Generator().manual_seed(seed)
    return torch.randn(tuple(int(s) for s in size), generator=g).to(device=device, dtype=dtype)


def default_check_size(example_size: Sequence[int]) -> tuple[int, int, int, int]:
    """A second size unlike the example: another batch and odd, non-proportional H and W."""
    b, c, h, w = (int(s) for s in example_size)
    return (b + 1, c, h * 3 // 2 + 3, max(8, w * 3 // 4 + 1))


def _require(module: str, feature: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise MissingExtraError(feature, "export", module)


def _param_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _compare(expected: torch.Tensor, actual: np.ndarray, what: str, atol: float, rtol: float) -> float:
    ref = expected.detach().float().cpu().numpy()
    if ref.shape != actual.shape:
        raise DscnetError(
            f"{what}: output shape {actual.shape} differs from PyTorch's {ref.shape}; "
            "the exported graph does not follow the input size"
        )
    diff = float(np.abs(ref - actual).max()) if ref.size else 0.0
    if not np.allclose(actual, ref, atol=atol, rtol=rtol):
        raise DscnetError(
            f"{what}: output differs from PyTorch by up to {diff:.3g} (atol={atol}, rtol={rtol}) "
            f"at input size {tuple(ref.shape[:1]) + tuple(ref.shape[2:])}; the export does not "
            "generalise to other sizes"
        )
    return diff


def _fails_to_run(what: str, x: torch.Tensor, exc: Exception, hint: str) -> DscnetError:
    """The error for an exported graph that raises at the check size.

    Typically a shape the exporter froze at the example size (tracers do this to ViT
    position embeddings traced at their native size): name the file and the size, not only
    the runtime's node.
    """
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    return DscnetError(
        f"{what} fails to run at input size {tuple(x.shape)} ({first_line}); the exported "
        f"graph does not follow the input size: {hint}"
    )


def verify_onnx(
    model: nn.Module,
    path: str | Path,
    size: Sequence[int],
    atol: float = 1e-3,
    rtol: float = 1e-3,
) -> float:
    """Run the ONNX file in onnxruntime (CPU) at ``size`` and compare with ``model.segment``.

    Returns the largest absolute difference; raises DscnetError when outside tolerance.
    """
    _require("onnxruntime", "ONNX verification")
    import onnxruntime as ort

    model.eval()
    x = _example(size, model, seed=1)
    with torch.no_grad():
        expected = model.segment(x)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    try:
        (actual,) = session.run(None, {name: x.float().cpu().numpy()})
    except Exception as exc:  # onnxruntime raises its own Fail/RuntimeException types
        raise _fails_to_run(
            f"ONNX model {path}", x, exc, "the torch.export-based exporter (needs onnxscript) "
            "keeps sizes symbolic"
        ) from exc
    return _compare(expected, actual, f"ONNX model {path}", atol, rtol)


def _export_dynamo(wrapper: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    from torch.export import Dim

    dims = {0: Dim.DYNAMIC, 2: Dim.DYNAMIC, 3: Dim.DYNAMIC}
    torch.onnx.export(
        wrapper,
        (example,),
        str(path),
        input_names=["images"],
        output_names=["seg_logits"],
        dynamic_shapes={"images": dims},
        opset_version=max(opset, 18),  # the torch.export exporter implements opset >= 18
        dynamo=True,
        external_data=_param_bytes(wrapper) > _EXTERNAL_DATA_BYTES,
        verbose=False,
    )


def _export_torchscript_onnx(wrapper: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        # The legacy exporter is deprecated upstream but still the most tolerant of
        # data-dependent Python code in backbones; the size check below guards it.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            wrapper,
            (example,),
            str(path),
            input_names=["images"],
            output_names=["seg_logits"],
            dynamic_axes={"images": axes, "seg_logits": axes},
            opset_version=opset,
            dynamo=False,
        )


def export_onnx(
    model: nn.Module,
    path: str | Path,
    opset: int = 17,
    example_size: Sequence[int] = (1, 3, 224, 224),
    exporter: Exporter = "auto",
    check: bool = True,
    check_size: Sequence[int] | None = None,
    atol: float = 1e-3,
    rtol: float = 1e-3,
) -> Path:
    """Export ``model.segment`` to ONNX with dynamic batch, height and width.

    Args:
        model: a model with ``segment``; exported in eval mode on its current device.
        path: the ``.onnx`` file to write (parent folders created).
        opset: ONNX opset (the torch.export-based exporter uses at least 18).
        example_size: ``(B, 3, H, W)`` of the tracing example.
        exporter: ``"dynamo"`` (torch.export-based, PyTorch's default), ``"torchscript"``
            (the legacy tracer) or ``"auto"``: dynamo, falling back to the tracer when it
            fails or ``onnxscript`` is missing.
        check: run the file in onnxruntime at ``check_size`` (default
            :func:`default_check_size`, a different size than the example) and compare with
            PyTorch within ``atol``/``rtol``.

    Raises:
        MissingExtraError: ``onnx``/``onnxruntime`` (or ``onnxscript`` for ``"dynamo"``) missing.
        DscnetError: the export does not match PyTorch at the check size.
    """
    _require("onnx", "ONNX export")
    if check:
        _require("onnxruntime", "ONNX export check")
    if exporter == "dynamo":
        _require("onnxscript", "ONNX export (dynamo exporter)")
    elif exporter not in ("auto", "torchscript"):
        raise ValueError(f"exporter must be 'auto', 'dynamo' or 'torchscript', got {exporter!r}")

    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    wrapper = SegmentWrapper(model).eval()
    example = _example(example_size, model)
    with writing(path), torch.no_grad():  # an OSError (full disk, ...) names the file
        if exporter == "torchscript":
            _export_torchscript_onnx(wrapper, example, path, opset)
        elif exporter == "dynamo":
            _export_dynamo(wrapper, example, path, opset)
        else:
            use_dynamo = importlib.util.find_spec("onnxscript") is not None
            try:
                if not use_dynamo:
                    raise RuntimeError("onnxscript is not installed")
                _export_dynamo(wrapper, example, path, opset)
            except Exception as exc:  # noqa: BLE001 - any dynamo failure: use the tracer
                warnings.warn(
                    f"torch.export-based ONNX export failed ({type(exc).__name__}: "
                    f"{str(exc)[:200]}); using the TorchScript-based exporter",
                    stacklevel=2,
                )
                _export_torchscript_onnx(wrapper, example, path, opset)

    import onnx

    onnx.checker.check_model(str(path))
    if check:
        verify_onnx(model, path, check_size or default_check_size(example_size), atol, rtol)
    return path


def export_torchscript(
    model: nn.Module,
    path: str | Path,
    example_size: Sequence[int] = (1, 3, 224, 224),
    check: bool = True,
    check_size: Sequence[int] | None = None,
    atol: float = 1e-3,
    rtol: float = 1e-3,
) -> Path:
    """Trace ``model.segment`` with ``torch.jit.trace`` and save it (``torch.jit.load`` reads it).

    Tracing records tensor shapes symbolically where the code uses them as tensors
    (``x.shape`` fed to ``interpolate``) but freezes Python arithmetic on sizes; so with
    ``check`` the saved file is reloaded and compared with PyTorch at a different size.

    Raises:
        DscnetError: the traced graph does not match PyTorch at the check size.
    """
    path = Path(path)
    model.eval()
    wrapper = SegmentWrapper(model).eval()
    example = _example(example_size, model)

    with torch.no_grad(), warnings.catch_warnings():
        # torch.jit is deprecated upstream (FutureWarning) but still the only TorchScript path.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(wrapper, (example,), check_trace=False)
        atomic_save(path, lambda fh: torch.jit.save(traced, fh))
    if check:
        verify_torchscript(model, path, check_size or default_check_size(example_size), atol, rtol)
    return path


def verify_torchscript(
    model: nn.Module, path: str | Path, size: Sequence[int], atol: float = 1e-3, rtol: float = 1e-3
) -> float:
    """Reload a TorchScript file and compare it with ``model.segment`` at ``size``."""
    model.eval()
    x = _example(size, model, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        loaded = torch.jit.load(str(path), map_location=x.device)
    with torch.no_grad():
        expected = model.segment(x)
        try:
            actual = loaded(x)
        except Exception as exc:  # the TorchScript interpreter raises plain RuntimeErrors
            raise _fails_to_run(
                f"TorchScript model {path}", x, exc, "trace at a size other than a ViT's native "
                "224 px (there the position-embedding resampling is skipped and its grid frozen), "
                "or export ONNX"
            ) from exc
    return _compare(expected, actual.detach().float().cpu().numpy(), f"TorchScript model {path}", atol, rtol)
