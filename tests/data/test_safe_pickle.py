"""cls_labels.npy (AFA/ToCo's pickled dict of arrays) is read without running any code."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from dscnet.data.safe_pickle import load_pickled_npy
from dscnet.data.voc import VOCDataset
from dscnet.errors import DatasetError


class _WritesAMarker:
    """Unpickling this calls ``os.system("touch <marker>")``: what a crafted file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_crafted_labels(path: Path, marker: Path) -> None:
    """An ``.npy`` in the labels-file format (0-d object array holding a dict) whose payload
    runs a shell command when unpickled by ``np.load(allow_pickle=True)``."""
    holder = np.empty((), dtype=object)
    holder[()] = {"img0": _WritesAMarker(marker)}
    np.save(path, holder, allow_pickle=True)


def test_a_crafted_labels_file_is_refused_and_never_runs(tmp_path):
    path, marker = tmp_path / "cls_labels.npy", tmp_path / "PWNED"
    write_crafted_labels(path, marker)
    with pytest.raises(DatasetError, match=r"cls_labels\.npy: refused: its pickled payload would call '(posix|os)\.system'"):
        load_pickled_npy(path)
    assert not marker.exists()


def test_a_crafted_labels_file_stops_a_voc_dataset(tiny_voc):
    marker = tiny_voc["root"] / "PWNED"
    write_crafted_labels(tiny_voc["root"] / "cls_labels.npy", marker)
    with pytest.raises(DatasetError, match="cls_labels.npy: refused"):
        VOCDataset(tiny_voc["root"], "train")
    assert not marker.exists()


def test_genuine_labels_files_still_load(tmp_path):
    labels = {"2007_000032": np.array([1, 0, 0, 1], np.float32), "b": np.zeros(20, np.uint8)}
    np.save(tmp_path / "new.npy", labels)  # what numpy 1.x and 2.x write
    # A protocol-2 pickle as older numpy/Python wrote it (bytes through _codecs.encode).
    holder = np.empty((), dtype=object)
    holder[()] = labels
    with open(tmp_path / "old.npy", "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "|O", "fortran_order": False, "shape": ()})
        pickle.dump(holder, fh, protocol=2)
    for name in ("new.npy", "old.npy"):
        back = load_pickled_npy(tmp_path / name)
        assert sorted(back) == sorted(labels)
        for key, value in labels.items():
            np.testing.assert_array_equal(back[key], value)
            assert back[key].dtype == value.dtype
    np.save(tmp_path / "plain.npy", np.arange(3))  # no pickle at all
    np.testing.assert_array_equal(load_pickled_npy(tmp_path / "plain.npy"), [0, 1, 2])


def test_not_an_npy_file_is_named(tmp_path):
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(DatasetError, match=r"junk\.npy: cannot read \.npy file"):
        load_pickled_npy(tmp_path / "junk.npy")
