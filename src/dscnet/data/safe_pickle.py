"""Reading the pickled ``.npy`` files the field ships, without running any code from them.

AFA/ToCo distribute image-level labels as ``cls_labels.npy``: ``np.save`` of a dict
``{image id: multi-hot array}``, i.e. a 0-d object array whose payload is a pickle.
``np.load(allow_pickle=True)`` would run whatever callable that pickle names, so a crafted
(usually downloaded) file could run code during ``dscnet train``. :func:`load_pickled_npy`
unpickles the payload with :class:`RestrictedUnpickler`, which admits only what numpy needs to
rebuild arrays and dtypes plus plain containers (the idea of ``torch.load(weights_only=True)``);
any other callable is refused before it is looked up, let alone called.
"""

from __future__ import annotations

import builtins
import codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from dscnet.errors import DatasetError


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles of arrays use it (bytes as latin-1 text)."""
    if codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"_codecs.encode with encoding '{encoding}' is not allowed")
    return text.encode("latin1")


# The callables numpy's array pickles name, taken from numpy itself so that both spellings
# (numpy.core before numpy 2, numpy._core since) map to the same function.
_RECONSTRUCT = np.empty(0).__reduce__()[0]
_SCALAR = np.float32(0).__reduce__()[0]
_ALLOWED: dict[tuple[str, str], Any] = {
    **{(m, "_reconstruct"): _RECONSTRUCT for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(m, "scalar"): _SCALAR for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
    # Plain containers ("__builtin__" is how Python 2 pickles name the module).
    **{(m, n): getattr(builtins, n) for m in ("builtins", "__builtin__")
       for n in ("dict", "list", "tuple", "set", "frozenset")},
}  # fmt: skip


class ForbiddenGlobalError(pickle.UnpicklingError):
    """A pickle names a callable that :class:`RestrictedUnpickler` does not admit."""

    def __init__(self, qualname: str) -> None:
        super().__init__(f"'{qualname}' is not allowed")
        self.qualname = qualname


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only numpy arrays/dtypes/scalars and builtin containers."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise ForbiddenGlobalError(f"{module}.{name}") from None


def load_pickled_npy(path: str | Path) -> Any:
    """The object stored in ``path`` (a ``.npy`` file), unpickled without running code.

    Arrays of plain dtypes are read with ``allow_pickle=False``; object arrays (a pickled
    payload) go through :class:`RestrictedUnpickler`, and a 0-d one is unwrapped to the object
    it holds (``np.save(dict)`` gives a dict back).

    Raises:
        DatasetError: naming the file, when it is unreadable, not a ``.npy`` file, or its
            payload names anything but arrays and containers.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise DatasetError(f"{path}: unsupported .npy format version {version}")
            if not dtype.hasobject:
                fh.seek(0)
                return np.load(fh, allow_pickle=False)
            obj = RestrictedUnpickler(fh, encoding="latin1").load()
    except ForbiddenGlobalError as exc:
        raise DatasetError(
            f"{path}: refused: its pickled payload would call '{exc.qualname}', which is not "
            "a numpy array or a plain container (dscnet never runs code from a data file)"
        ) from None
    except DatasetError:
        raise
    except (
        pickle.UnpicklingError, OSError, ValueError, EOFError, TypeError, AttributeError, IndexError
    ) as exc:
        raise DatasetError(f"{path}: cannot read .npy file ({type(exc).__name__}: {exc})") from None
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject and obj.shape == () == tuple(shape):
        return obj.item()
    return obj
