"""What ``dscnet predict`` reads and where it may write.

- :func:`expand_inputs` turns files, folders and glob patterns into image files, and reports
  (never silently skips) what cannot be an image: folders and globs that match nothing,
  broken symbolic links, folders named like images.
- :func:`check_output_folder` refuses, before any work, an ``--out`` that would write over or
  among the inputs (equal to an input folder or inside one, or the folder of an input file)
  and inputs that are the outputs of an earlier run (a folder holding predict's
  ``index.csv``), so a run never destroys an image and never reads its own masks back.
"""

from __future__ import annotations

import csv
import glob
import os
from collections.abc import Sequence
from pathlib import Path

from dscnet.errors import DatasetError, OutputError
from dscnet.utils.io import check_output_dir

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
# predict writes this file into its output folder; its header marks the folder as an output.
INDEX_NAME = "index.csv"
INDEX_HEADER = ("input", "mask", "error")


def _ext_list() -> str:
    return "extensions " + ", ".join(sorted(IMAGE_EXTENSIONS))


def _not_an_image(path: Path) -> str | None:
    """Why a folder entry named like an image cannot be read as one, or None when it can."""
    if path.is_symlink() and not path.exists():
        return f"{path}: broken symbolic link (its target {os.readlink(path)} does not exist)"
    if path.is_dir():
        return f"{path}: is a folder named like an image, not an image (folders are not searched)"
    if not path.is_file():
        return f"{path}: not a regular file"
    return None


def _images_among(candidates: list[Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """The image files among ``candidates`` (by extension) and the entries named like images
    that are not files, as ``(path, message)``."""
    files, problems = [], []
    for p in sorted(candidates):
        if p.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        reason = _not_an_image(p)
        if reason is None:
            files.append(p)
        else:
            problems.append((str(p), reason))
    return files, problems


def expand_inputs(inputs: Sequence[str | Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Turn files, folders and glob patterns into a de-duplicated list of image files.

    A folder contributes its images (by extension, sorted, not recursive); a glob pattern its
    matching images (sorted; ``**`` recurses); a file named explicitly is kept whatever its
    extension. Inputs that match nothing, and entries named like images that are broken
    symbolic links or folders, are returned as ``(input, message)`` failures.
    """
    found: list[Path] = []
    problems: list[tuple[str, str]] = []
    for item in inputs:
        text = str(item)
        path = Path(text).expanduser()
        if path.is_dir():
            files, bad = _images_among(list(path.iterdir()))
            problems.extend(bad)
            if not files and not bad:
                problems.append((text, f"folder {path} holds no images ({_ext_list()})"))
        elif path.is_file():
            files = [path]
        elif glob.has_magic(text):
            files, bad = _images_among([Path(p) for p in glob.glob(str(path), recursive=True)])
            problems.extend(bad)
            if not files and not bad:
                problems.append((text, f"pattern {text!r} matches no images ({_ext_list()})"))
        elif path.is_symlink():
            files = []
            problems.append((text, _not_an_image(path) or f"{path}: cannot be read"))
        else:
            files = []
            problems.append((text, f"no such file or folder: {path}"))
        found.extend(files)
    seen: set[Path] = set()
    unique = []
    for p in found:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique, problems


def output_stems(paths: Sequence[Path]) -> list[str]:
    """A distinct output stem per input: ``cat.jpg`` -> ``cat``; a second ``cat`` (another
    folder, or ``cat.png`` next to ``cat.jpg``) becomes ``cat-2``, then ``cat-3``...

    Compared case-insensitively so outputs don't collide on macOS/Windows file systems.
    """
    used: set[str] = set()
    stems = []
    for p in paths:
        stem = p.stem
        candidate, n = stem, 1
        while candidate.lower() in used:
            n += 1
            candidate = f"{stem}-{n}"
        used.add(candidate.lower())
        stems.append(candidate)
    return stems


def is_predict_output(folder: Path) -> bool:
    """Whether ``folder`` holds the ``index.csv`` that ``dscnet predict`` writes."""
    try:
        with (folder / INDEX_NAME).open(newline="") as fh:
            return tuple(next(csv.reader(fh), ())) == INDEX_HEADER
    except (OSError, UnicodeDecodeError, csv.Error):
        return False


def _glob_base(pattern: str) -> Path:
    """The folder part of a glob pattern before its first wildcard."""
    parts = Path(pattern).expanduser().parts
    first = next(i for i, p in enumerate(parts) if glob.has_magic(p))
    return Path(*parts[:first]) if first else Path(".")


def _input_roots(inputs: Sequence[str | Path]) -> list[tuple[Path, bool]]:
    """``(folder, whether --out may not lie anywhere inside it)`` for every folder input and
    glob pattern: a folder input and a recursive (``**``) pattern could read outputs written
    below them, a plain pattern only those written into its own folder."""
    roots = []
    for item in inputs:
        path = Path(str(item)).expanduser()
        if path.is_dir():
            roots.append((path, True))
        elif glob.has_magic(str(item)) and not path.exists():
            roots.append((_glob_base(str(item)), "**" in str(item)))
    return roots


def check_output_folder(out: str | Path, inputs: Sequence[str | Path], paths: Sequence[Path]) -> Path:
    """Refuse an output folder that could overwrite or re-read inputs (see the module doc).

    Args:
        out: the output folder (``--out``).
        inputs: the inputs as given (files, folders, glob patterns).
        paths: the image files :func:`expand_inputs` found in them.

    Raises:
        OutputError: ``out`` is a file, lies under a file or cannot be written; ``out`` is an
            input folder or lies inside one (or is a glob's folder, or inside it for ``**``),
            or is the folder of an input image.
        DatasetError: an input image lies in the output folder of an earlier ``dscnet predict``.
    """
    out = check_output_dir(out)
    target = out.resolve()
    for root, whole_tree in _input_roots(inputs):
        resolved = root.resolve()
        if target == resolved or (whole_tree and resolved in target.parents):
            where = "is the input folder" if target == resolved else "lies inside the input folder"
            raise OutputError(
                f"--out {out} {where} {root}: masks would be written among the images (and "
                "over any PNG of the same name) and read back as inputs; choose a folder "
                "outside the inputs"
            )
    for folder in sorted({p.resolve().parent for p in paths}):
        if folder == target:
            raise OutputError(
                f"--out {out} is the folder of input images: masks (<name>.png) could overwrite "
                "images there; choose another folder"
            )
        if is_predict_output(folder):
            raise DatasetError(
                f"{folder} is the output folder of an earlier dscnet predict (it holds "
                f"{INDEX_NAME}): its masks and overlays are not inputs; pass the original images"
            )
    return out
