"""Writing outputs safely: atomic files, the umask honoured, OS errors in plain words.

- :func:`atomic_write` writes a temporary file next to the target and renames it over the
  target, so a crash never leaves a half-written checkpoint, mask or report; the file gets
  the permissions an ordinary ``open(path, "w")`` would give it (``0o666 & ~umask``).
- :func:`check_output_dir` / :func:`check_output_file` let a command refuse an output path
  before it starts working (an ``--out`` under a regular file, a folder it cannot write).
- :func:`output_error` turns an ``OSError`` raised while writing into an
  :class:`~dscnet.errors.OutputError` naming the path and the reason (no space left on
  device, not a directory, permission denied, ...).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import torch

from dscnet.errors import OutputError

# The reasons users need to act on, in words; anything else keeps the OS's own text.
_REASONS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.ENOTDIR: "not a directory",
    errno.EISDIR: "is a directory",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
    errno.ENOENT: "no such file or directory",
    errno.ENAMETOOLONG: "file name too long",
}


def os_reason(exc: OSError) -> str:
    """The reason of an ``OSError`` in words (``"no space left on device"``, ...)."""
    return _REASONS.get(exc.errno, exc.strerror or str(exc)) if exc.errno else str(exc)


def _blocking_file(path: Path) -> Path | None:
    """The first existing ancestor of ``path`` (or ``path``) that is not a folder, if any."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def output_error(path: str | Path, exc: OSError) -> OutputError:
    """An :class:`OutputError` for an ``OSError`` raised while writing ``path``."""
    path = Path(path)
    blocker = _blocking_file(path.parent)
    if blocker is not None:  # mkdir under a file reports EEXIST or ENOTDIR: say which file
        return OutputError(f"{path}: cannot write: not a directory ({blocker} is a file)")
    return OutputError(f"{path}: cannot write: {os_reason(exc)}")


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Turn an ``OSError`` raised in the block into an :class:`OutputError` naming the file the
    OS refused (or ``path`` when it does not say)."""
    try:
        yield
    except OSError as exc:
        raise output_error(exc.filename or path, exc) from None


def check_output_dir(path: str | Path, what: str = "output folder") -> Path:
    """Raise :class:`OutputError` unless ``path`` is, or can be created as, a writable folder.

    Nothing is created: this runs before a command starts its work, so that a bad ``--out``
    fails in a second instead of after a long computation.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: the {what} is a file, not a folder")
    blocker = _blocking_file(path)
    if blocker is not None:
        raise OutputError(f"{path}: cannot create the {what}: {blocker} is a file, not a folder")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: cannot write the {what}: permission denied on {existing}")
    return path


def check_output_file(path: str | Path, what: str = "output file") -> Path:
    """Like :func:`check_output_dir` for a file: its folder must be writable, it not a folder."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputError(f"{path}: the {what} is a folder, not a file")
    blocker = _blocking_file(path.parent)
    if blocker is not None:
        raise OutputError(f"{path}: cannot write the {what}: {blocker} is a file, not a folder")
    check_output_dir(path.parent, f"folder of the {what}")
    return path


def current_umask() -> int:
    """The process umask (``os.umask`` can only be read by setting it; it is set back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file over ``path``.

    The rename is atomic on POSIX, so readers see either the old or the new file. The file
    ends with mode ``0o666 & ~umask`` like any file the user creates (``mkstemp`` makes 0600).
    An ``OSError`` (full disk, a file where a folder should be, no permission) becomes an
    :class:`OutputError` naming ``path``; the temporary file is removed.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise output_error(path, exc) from None
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, path)
    except OSError as exc:
        raise output_error(path, exc) from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return path


def torch_load_reason(exc: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in words, without torch's advice to retry
    with ``weights_only=False`` (the wrong fix for a corrupt file, unsafe for a hostile one)."""
    text = str(exc)
    refused = re.search(r"unsupported (?:global: )?GLOBAL (\S+)", text, re.IGNORECASE)
    if refused:
        return f"it holds a pickled Python object ({refused.group(1)}), which a weights-only load refuses"
    first = (text.strip().splitlines() or [""])[0][:200]
    return type(exc).__name__ if "weights_only" in first else f"{type(exc).__name__}: {first}"


def atomic_save(path: str | Path, save: Callable[[BinaryIO], Any]) -> Path:
    """``save(file)`` into a binary Python file object, through :func:`atomic_write`.

    For torch's serialisers: given a path, their C++ writer reports a full disk as an opaque
    "iostream error"; given a Python file, the OS's ``OSError(ENOSPC)`` comes back and is named.
    """

    def write(tmp: Path) -> None:
        with tmp.open("wb") as fh:
            save(fh)

    return atomic_write(path, write)


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` through :func:`atomic_save`."""
    return atomic_save(path, lambda fh: torch.save(obj, fh))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write text atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))
