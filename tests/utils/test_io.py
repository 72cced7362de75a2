"""Writing outputs: the umask is honoured, bad output paths and full disks are named."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
import torch

from dscnet.errors import OutputError
from dscnet.utils.io import (
    atomic_torch_save,
    atomic_write_text,
    check_output_dir,
    check_output_file,
    output_error,
)


@pytest.fixture
def umask():
    """Set a umask for the test, restore the old one afterwards."""
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077, 0o002])
def test_atomic_writes_get_the_mode_of_an_ordinary_file(tmp_path, umask, mask):
    umask(mask)
    ordinary = tmp_path / "ordinary.txt"
    ordinary.write_text("x")
    atomic_write_text(tmp_path / "atomic.txt", "x")
    atomic_torch_save({"a": torch.zeros(1)}, tmp_path / "ckpt.pth")
    expected = 0o666 & ~mask
    assert stat.S_IMODE(ordinary.stat().st_mode) == expected
    assert stat.S_IMODE((tmp_path / "atomic.txt").stat().st_mode) == expected
    assert stat.S_IMODE((tmp_path / "ckpt.pth").stat().st_mode) == expected


def test_output_paths_are_checked_before_work(tmp_path, monkeypatch):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    with pytest.raises(OutputError, match=r"notes\.txt: the output folder is a file, not a folder"):
        check_output_dir(a_file)
    with pytest.raises(OutputError, match=r"cannot create the output folder: .*notes\.txt is a file"):
        check_output_dir(a_file / "sub" / "deeper")
    with pytest.raises(OutputError, match=r"the report is a folder, not a file"):
        check_output_file(tmp_path, "report")
    assert check_output_dir(tmp_path / "new" / "dir") == tmp_path / "new" / "dir"
    assert not (tmp_path / "new").exists()  # checking creates nothing
    # Root may write anywhere, so simulate a folder the user may not write to.
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path)
    with pytest.raises(OutputError, match=r"cannot write the output folder: permission denied on"):
        check_output_dir(tmp_path / "new")
    assert a_file.read_text() == "mine"


@pytest.mark.parametrize(
    ("code", "reason"),
    [(errno.ENOSPC, "no space left on device"), (errno.EACCES, "permission denied"),
     (errno.EROFS, "read-only file system"), (errno.EDQUOT, "disk quota exceeded")],
)
def test_os_errors_are_named_in_words(tmp_path, code, reason):
    err = output_error(tmp_path / "x.png", OSError(code, os.strerror(code)))
    assert str(err) == f"{tmp_path / 'x.png'}: cannot write: {reason}"


def test_a_full_disk_while_saving_a_checkpoint_is_named(tmp_path, monkeypatch):
    """torch.save to a file path reports a full disk as an opaque "iostream error"; through a
    Python file object the OS's ENOSPC comes back and is named."""
    real_open = Path.open

    class FullDisk:
        def __init__(self, fh):
            self.fh = fh

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    def open_on_a_full_disk(self, mode="r", *args, **kwargs):
        fh = real_open(self, mode, *args, **kwargs)
        return FullDisk(fh) if "w" in mode else fh

    (tmp_path / "last.pth").write_bytes(b"the previous checkpoint")
    monkeypatch.setattr(Path, "open", open_on_a_full_disk)
    with pytest.raises(OutputError, match=r"last\.pth: cannot write: no space left on device"):
        atomic_torch_save({"w": torch.zeros(1000)}, tmp_path / "last.pth")
    monkeypatch.undo()
    assert (tmp_path / "last.pth").read_bytes() == b"the previous checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pth"]  # no temp file left


def test_writing_under_a_file_names_the_file(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(OutputError, match=r"cannot write: not a directory \(.*f is a file\)"):
        atomic_write_text(tmp_path / "f" / "sub" / "x.json", "{}")
