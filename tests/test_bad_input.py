"""The bad-input suite: careless and hostile input to the ``dscnet`` command, one table.

Each row builds its input in a temporary folder, runs the CLI in-process and checks the exit
code (2: a user error, printed without a traceback; 1: some inputs failed and were reported;
0: fine) and a fragment of the message; some rows check afterwards that nothing was run,
lost or overwritten. Everything is tiny (16 images of 48 px in a folder, no masks, 2 steps).
"""

from __future__ import annotations

import errno
import os
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dscnet.cli.main import main
from tests.conftest import TINY_OVERRIDES

TINY = [
    *TINY_OVERRIDES,
    "train.max_steps=2",
    "train.ckpt_every=2",
    "eval.batch_size=4",
    "data.type=folder",  # no masks: no evaluation (and its plots) after the 2 steps
    "data.val_split=train",
]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """16 images of 48 px in a folder with tags of 2 classes."""
    root = tmp_path_factory.mktemp("bad_input_data")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    rows = ["image,tags"]
    for i in range(16):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        rows.append(f"{i}.png,{['cat', 'dog', 'cat;dog'][i % 3]}")
    (root / "tags.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def fast(tiny_data) -> list[str]:
    """Overrides of a run that takes seconds: 2 steps on the tiny folder dataset."""
    return [*TINY, f"data.root={tiny_data}"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, fast) -> Path:
    """A run directory trained for 2 steps (checkpoints/last.pth at step 2)."""
    run = tmp_path_factory.mktemp("bad_input") / "run"
    assert main(["train", "--examples", "0", *fast, f"experiment.work_dir={run}"]) == 0
    return run


@dataclass
class Env:
    """What a row may use: a fresh folder, the trained run, monkeypatch."""

    tmp: Path
    run: Path
    fast: list[str]
    monkeypatch: pytest.MonkeyPatch

    @property
    def ckpt(self) -> str:
        return str(self.run / "checkpoints" / "last.pth")

    def a_file(self) -> Path:
        """A regular file of the user's where a folder is expected."""
        path = self.tmp / "notes.txt"
        path.write_text("my notes")
        return path

    def copy_run(self) -> Path:
        """A copy of the trained run that a row may resume or modify."""
        return Path(shutil.copytree(self.run, self.tmp / "run"))

    def photos(self) -> Path:
        """A folder of two small photos (PNG)."""
        folder = self.tmp / "photos"
        folder.mkdir(exist_ok=True)
        rng = np.random.default_rng(0)
        for name in ("cat.png", "dog.png"):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / name)
        return folder

    def voc(self) -> Path:
        """A tiny dataset in VOC layout (with a genuine cls_labels.npy)."""
        from dscnet.data.synth import SynthSpec, write_synthetic_voc

        return write_synthetic_voc(self.tmp / "voc", SynthSpec(num_train=8, num_val=2, image_size=32))


@dataclass
class Case:
    name: str
    argv: Callable[[Env], list[str]]
    code: int
    message: str
    after: Callable[[Env, str], None] | None = None


def _train(*extra: str) -> Callable[[Env], list[str]]:
    return lambda env: ["train", "--examples", "0", *env.fast, f"experiment.work_dir={env.tmp / 'new_run'}", *extra]


class _RunsCode:
    """A pickled object whose unpickling would run ``touch MARKER``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _crafted_labels(env: Env) -> list[str]:
    root = env.voc()
    holder = np.empty((), dtype=object)
    holder[()] = {"train_00000": _RunsCode(env.tmp / "PWNED")}
    np.save(root / "cls_labels.npy", holder, allow_pickle=True)
    return ["train", *env.fast, "data.type=voc", f"data.root={root}", f"experiment.work_dir={env.tmp / 'r'}"]


def _background_last(env: Env) -> list[str]:
    root = env.voc()
    names = (root / "classes.txt").read_text().split()
    (root / "classes.txt").write_text("\n".join([*names[1:], names[0]]) + "\n")
    return ["train", *env.fast, "data.type=voc", f"data.root={root}", f"experiment.work_dir={env.tmp / 'r'}"]


def _misspelt_tag(env: Env) -> list[str]:
    root = env.photos().parent
    (root / "classes.txt").write_text("background\ndog\ncat\n")
    (root / "tags.csv").write_text("image,tags\ncat.png,cat\ndog.png,dgo\n")
    return ["train", *env.fast, "data.type=folder", f"data.root={root}", "data.folder.image_dir=photos",
            f"experiment.work_dir={env.tmp / 'r'}"]  # fmt: skip


def _pickled_weights(env: Env) -> list[str]:
    path = env.tmp / "weights.pth"
    torch.save({"conv.weight": torch.zeros(1), "extra": _RunsCode(env.tmp / "PWNED")}, path)
    return _train(f"model.pretrained={path}")(env)


def _earlier_output(env: Env) -> list[str]:
    masks = env.tmp / "masks"
    masks.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(masks / "cat.png")
    (masks / "index.csv").write_text("input,mask,error\nphotos/cat.png,cat.png,\n")
    return ["predict", "--checkpoint", env.ckpt, str(masks), "--out", str(env.tmp / "again")]


def _odd_entries(env: Env) -> list[str]:
    photos = env.photos()
    (photos / "gone.jpg").symlink_to(env.tmp / "deleted.jpg")
    (photos / "holiday.png").mkdir()
    return ["predict", "--checkpoint", env.ckpt, str(photos), "--out", str(env.tmp / "out")]


def _bomb(env: Env) -> list[str]:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 8000, 8000, 8, 2, 0, 0, 0)  # claims 64 Mpixel in 100 bytes
    path = env.tmp / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return ["predict", "--checkpoint", env.ckpt, str(path), "--out", str(env.tmp / "out")]


def _full_disk(env: Env) -> list[str]:
    def no_space(self, fp, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    photos = env.photos()
    env.monkeypatch.setattr(Image.Image, "save", no_space)
    return ["predict", "--checkpoint", env.ckpt, str(photos), "--out", str(env.tmp / "out")]


def _report_html_is_a_folder(env: Env) -> list[str]:
    run = env.copy_run()
    (run / "report.html").mkdir()
    return ["report", str(run)]


def _unchanged(folder: str) -> Callable[[Env, str], None]:
    def check(env: Env, _: str) -> None:
        assert sorted(p.name for p in (env.tmp / folder).iterdir()) == ["cat.png", "dog.png"]
        fresh = Env(env.tmp / "fresh", env.run, env.fast, env.monkeypatch)
        fresh.tmp.mkdir()
        for name in ("cat.png", "dog.png"):
            assert (env.tmp / folder / name).read_bytes() == (fresh.photos() / name).read_bytes()

    return check


def _nothing_ran(env: Env, _: str) -> None:
    assert not (env.tmp / "PWNED").exists()


def _index_lists(*fragments: str) -> Callable[[Env, str], None]:
    def check(env: Env, _: str) -> None:
        index = (env.tmp / "out" / "index.csv").read_text()
        assert all(f in index for f in fragments), index

    return check


def _says(text: str, fragment: str) -> None:
    assert fragment in text, text


def _no_nan(env: Env, text: str) -> None:
    assert "nan" not in text


def _weights_only_kept(env: Env, text: str) -> None:
    assert "weights_only=False" not in text and not (env.tmp / "PWNED").exists()


def _user_file_kept(env: Env, _: str) -> None:
    assert (env.tmp / "notes.txt").read_text() == "my notes"


CASES = [
    # ---- config values: refused at load time, naming the key (no traceback, exit 2)
    Case("max_steps not a number", _train("train.max_steps=abc"), 2, "train.max_steps='abc': must be an integer"),
    Case("negative learning rate", _train("optim.lr=-1"), 2, "optim.lr=-1.0: must be >= 0"),
    Case("empty groups", _train("data.sampler.group_size=0"), 2, "data.sampler.group_size=0: must be >= 1"),
    Case("eval batch of 0 (before training)", _train("eval.batch_size=0"), 2, "eval.batch_size=0: must be >= 1"),
    Case("unknown choice", _train("train.amp=fp32"), 2, "train.amp='fp32': must be one of none, bf16, fp16"),
    Case("unknown key", _train("train.max_stepz=3"), 2, "unknown config key 'train.max_stepz'"),
    Case("unknown option", lambda env: ["train", "--bogus"], 2, "unrecognized arguments: --bogus"),
    # ---- resume
    Case("resume with another model shape",
         lambda env: ["train", "--resume", "auto", *env.fast, f"experiment.work_dir={env.copy_run()}", "model.seg_hidden=32"],
         2, "cannot resume: the config builds a model of another shape than the checkpoint's (model.seg_hidden: 16 -> 32)"),
    Case("overrides after --resume; the resumed run counts its own steps",
         lambda env: ["train", "--examples", "0", "--resume", "auto", *env.fast, f"experiment.work_dir={env.copy_run()}", "train.max_steps=4"],
         0, "trained 2 steps in", lambda env, text: _says(text, "resumed at step 2, now at step 4")),
    Case("nothing to train", _train("train.max_steps=0"), 0, "no step to train (train.max_steps=0)", _no_nan),
    # ---- data files: nothing runs, the file is named
    Case("crafted cls_labels.npy", _crafted_labels, 2, "cls_labels.npy: refused: its pickled payload would call", _nothing_ran),
    Case("background last in classes.txt", _background_last, 2, "must be the first class (background is id 0)"),
    Case("misspelt tag with the root's classes.txt", _misspelt_tag, 2, "unknown tag(s) ['dgo'] for image 'dog.png'"),
    Case("pretrained weights with pickled code", _pickled_weights, 2, "which a weights-only load refuses", _weights_only_kept),
    # ---- predict never destroys or re-reads, and reports what it skips
    Case("predict --out is the input folder",
         lambda env: ["predict", "--checkpoint", env.ckpt, str(env.photos()), "--out", str(env.tmp / "photos")],
         2, "is the input folder", _unchanged("photos")),
    Case("predict --out inside the input folder",
         lambda env: ["predict", "--checkpoint", env.ckpt, str(env.photos()), "--out", str(env.tmp / "photos" / "masks")],
         2, "lies inside the input folder"),
    Case("predict on an earlier run's outputs", _earlier_output, 2, "is the output folder of an earlier dscnet predict"),
    Case("predict broken link and folder named like an image", _odd_entries, 1, "broken symbolic link",
         _index_lists("gone.jpg", "holiday.png", "is a folder named like an image", "cat.png,cat.png,")),
    Case("predict decompression bomb", _bomb, 1, "8000x8000 = 64,000,000 pixels, more than the limit of 40,000,000"),
    Case("predict on a full disk", _full_disk, 2, "cat.png: cannot write: no space left on device",
         _index_lists("not processed (the run stopped")),
    # ---- outputs checked before the work, in every command that writes
    Case("train run folder under a file", lambda env: _train(f"experiment.work_dir={env.a_file() / 'run'}")(env),
         2, "notes.txt is a file, not a folder", _user_file_kept),
    Case("predict --out under a file",
         lambda env: ["predict", "--checkpoint", env.ckpt, str(env.photos()), "--out", str(env.a_file() / "m")],
         2, "notes.txt is a file, not a folder", _user_file_kept),
    Case("eval --out under a file",
         lambda env: ["eval", "--checkpoint", env.ckpt, "--out", str(env.a_file() / "e")], 2, "notes.txt is a file"),
    Case("pseudo --out is a file",
         lambda env: ["pseudo", "--checkpoint", env.ckpt, "--out", str(env.a_file())], 2,
         "the output folder is a file, not a folder", _user_file_kept),
    Case("threshold --json under a file",
         lambda env: ["threshold", "--checkpoint", env.ckpt, "--json", str(env.a_file() / "s.json")], 2, "notes.txt is a file"),
    Case("export --out is a folder",
         lambda env: ["export", "--checkpoint", env.ckpt, "--out", str(env.tmp)], 2, "is a folder, not a file"),
    Case("report.html is a folder", _report_html_is_a_folder, 2, "the report is a folder, not a file"),
    Case("data synth --out under a file",
         lambda env: ["data", "synth", "--out", str(env.a_file() / "s")], 2, "notes.txt is a file"),
    Case("demo --out under a file",
         lambda env: ["demo", "--out", str(env.a_file() / "d"), *env.fast], 2, "notes.txt is a file"),
    Case("ablate --out under a file",
         lambda env: ["ablate", "--out", str(env.a_file() / "a"), *env.fast], 2, "notes.txt is a file"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, trained: Path, fast: list[str], tmp_path: Path, monkeypatch, capsys) -> None:
    env = Env(tmp_path, trained, fast, monkeypatch)
    argv = case.argv(env)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert code == case.code, text
    assert case.message in text, text
    assert "Traceback" not in text
    if case.after is not None:
        case.after(env, text)

