"""A plain folder of images plus a CSV or JSON file of tags (no masks needed).

CSV (header optional)::

    image,tags
    cats/001.jpg,cat;dog
    002.png,person bicycle
    003.jpg,"potted plant;cat"

Tags are split on ``;`` when the field has one (so names may contain spaces), else on
whitespace; extra columns are read as more tags. JSON: ``{"cats/001.jpg": ["cat", "dog"],
...}`` (a list, or a string split as in the CSV). Image names are paths relative to the
image folder; any file names work. Classes come from ``class_file`` (one name per line,
background first; a list of foreground names alone also works), else from ``classes.txt`` in
the root when it exists (as in the VOC layout), and only without either from the sorted set
of tags found. With a class list, class ids follow its order and a tag it does not name is
an error naming the tags file, the line and the tag.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from dscnet.data.base import WSSSDataset
from dscnet.data.readers import BACKGROUND_NAMES, read_class_file, read_image
from dscnet.data.registry import register_dataset, require_root
from dscnet.errors import DatasetError

# Read from the dataset root when data.folder.class_file is null, as VOCDataset does.
DEFAULT_CLASS_FILE = "classes.txt"
HEADER_FIRST = ("image", "images", "file", "filename", "file_name", "path", "name")


def split_tags(text: str) -> list[str]:
    """``"a;b"`` -> ``[a, b]`` (names may hold spaces); ``"a b"`` -> ``[a, b]``."""
    parts = text.split(";") if ";" in text else text.split()
    return [p.strip() for p in parts if p.strip()]


def _read_csv(path: Path) -> list[tuple[int, str, list[str]]]:
    """Rows ``(line number, image name, tags)``."""
    rows = []
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        first = True
        for cells in reader:
            line = reader.line_num
            cells = [c.strip() for c in cells]
            if not cells or not cells[0] or cells[0].startswith("#"):
                continue
            if first and cells[0].lower() in HEADER_FIRST:
                first = False
                continue
            first = False
            tags = [t for cell in cells[1:] for t in split_tags(cell)]
            rows.append((line, cells[0], tags))
    return rows


def _read_json(path: Path) -> list[tuple[int, str, list[str]]]:
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: invalid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DatasetError(f'{path}: expected a JSON object {{"image": ["tag", ...]}}')
    rows = []
    for name, tags in data.items():
        # Line of the key, so that errors point into the file like they do for CSV.
        pos = text.find(json.dumps(name))
        line = text.count("\n", 0, pos) + 1 if pos >= 0 else 0
        if isinstance(tags, str):
            tags = split_tags(tags)
        elif not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise DatasetError(
                f"{path}:{line}: tags of '{name}' must be a list of names or a string"
            )
        rows.append((line, str(name), [t.strip() for t in tags if t.strip()]))
    return rows


class FolderDataset(WSSSDataset):
    """Images in a folder with tags from a CSV/JSON file (see the module docstring).

    There are no masks: such a dataset trains the model and its CAMs, but cannot be scored.
    ``max_pixels``: larger images are refused (see :func:`~dscnet.data.readers.read_image`).
    """

    def __init__(
        self,
        root: str | Path,
        image_dir: str | Path = "images",
        tags_file: str | Path = "tags.csv",
        class_file: str | Path | None = None,
        max_pixels: int | None = None,
    ) -> None:
        self.max_pixels = max_pixels
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: dataset root not found (data.root)")
        self.image_dir = self._resolve(image_dir)
        if not self.image_dir.is_dir():
            raise DatasetError(f"{self.image_dir}: image folder not found (data.folder.image_dir)")
        tags_path = self._resolve(tags_file)
        if not tags_path.is_file():
            raise DatasetError(f"{tags_path}: tags file not found (data.folder.tags_file)")
        self.source = str(tags_path)
        if tags_path.suffix.lower() == ".json":
            rows = _read_json(tags_path)
        else:
            rows = _read_csv(tags_path)
        if not rows:
            raise DatasetError(f"{tags_path}: lists no image")
        # "background" is never a foreground tag; drop it wherever it appears.
        rows = [
            (ln, name, [t for t in tags if t.lower() not in BACKGROUND_NAMES])
            for ln, name, tags in rows
        ]

        class_path = self._resolve(class_file if class_file is not None else DEFAULT_CLASS_FILE)
        if class_file is not None or class_path.is_file():
            self.class_names = read_class_file(class_path)
            index = {n: i for i, n in enumerate(self.class_names[1:])}
            for line, name, tags in rows:
                unknown = [t for t in tags if t not in index]
                if unknown:
                    raise DatasetError(
                        f"{tags_path}:{line}: unknown tag(s) {unknown} for image '{name}' "
                        f"(not in the class list {class_path})"
                    )
        else:
            names = sorted({t for _, _, tags in rows for t in tags})
            if not names:
                raise DatasetError(f"{tags_path}: no image has a tag")
            self.class_names = ["background", *names]
            index = {n: i for i, n in enumerate(names)}

        seen: dict[str, int] = {}
        self._paths: list[Path] = []
        self.ids = []
        self.tags = np.zeros((len(rows), len(self.class_names) - 1), dtype=np.uint8)
        missing: list[str] = []
        used_ids: set[str] = set()
        for n, (line, name, tags) in enumerate(rows):
            if name in seen:
                raise DatasetError(
                    f"{tags_path}:{line}: image '{name}' already listed on line {seen[name]}"
                )
            seen[name] = line
            path = self.image_dir / name
            if not path.is_file():
                missing.append(f"{name} (line {line})")
            self._paths.append(path)
            sid = Path(name).with_suffix("").as_posix()
            sid = sid if sid not in used_ids else name  # a.jpg and a.png: keep both apart
            used_ids.add(sid)
            self.ids.append(sid)
            self.tags[n, [index[t] for t in tags]] = 1
        if missing:
            raise DatasetError(
                f"{tags_path}: {len(missing)} listed images are missing from {self.image_dir} "
                f"(e.g. {', '.join(missing[:3])})"
            )
        self.has_masks = False
        self._check_tags()

    def _resolve(self, path: str | Path) -> Path:
        path = Path(path).expanduser()
        return path if path.is_absolute() else self.root / path

    def load_image(self, index: int) -> np.ndarray:
        return read_image(self._paths[index], self.max_pixels)

    def load_mask(self, index: int) -> None:
        return None

    def describe(self, index: int) -> str:
        return str(self._paths[index])


# ----------------------------------------------------------------------------- registration
def _folder_class_names(cfg: DictConfig) -> list[str]:
    root = Path(require_root(cfg)).expanduser()
    path = Path(cfg.data.folder.class_file or DEFAULT_CLASS_FILE).expanduser()
    path = path if path.is_absolute() else root / path
    if cfg.data.folder.class_file or path.is_file():
        return read_class_file(path)
    return build_folder(cfg, str(cfg.data.train_split)).class_names  # classes from the tags


@register_dataset("folder", class_names=_folder_class_names)
def build_folder(cfg: DictConfig, split: str) -> FolderDataset:
    """``data.type=folder``: images + a tags file. A folder has no splits: every split is the
    whole folder (it has no masks to score)."""
    f = cfg.data.folder
    return FolderDataset(require_root(cfg), f.image_dir, f.tags_file, f.class_file, cfg.data.max_pixels)
