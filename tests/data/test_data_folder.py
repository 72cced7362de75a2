"""Plain folder + CSV/JSON tags: parsing, class lists, and messages."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from PIL import Image

from dscnet.config import load_config
from dscnet.data.build import build_dataset, class_names
from dscnet.data.folder import FolderDataset
from dscnet.errors import DatasetError
from tests.data.datahelpers import rgb_image


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "mine"
    (root / "images" / "sub").mkdir(parents=True)
    for n, name in enumerate(["a.jpg", "b.png", "sub/c d.png", "e.png"]):
        Image.fromarray(rgb_image(8, 10, n)).save(root / "images" / name)
    return root


def test_csv_with_header_semicolons_spaces_and_extra_columns(folder):
    (folder / "tags.csv").write_text(
        "image,tags\n"
        "a.jpg,cat;dog\n"
        "b.png,dog cat\n"
        '"sub/c d.png","potted plant;bird"\n'
        "# a comment line\n"
        "e.png,\n"
    )
    ds = FolderDataset(folder)
    assert ds.class_names == ["background", "bird", "cat", "dog", "potted plant"]
    assert ds.ids == ["a", "b", "sub/c d", "e"]
    np.testing.assert_array_equal(ds.tags, [[0, 1, 1, 0], [0, 1, 1, 0], [1, 0, 0, 1], [0, 0, 0, 0]])
    assert not ds.has_masks and ds.load_mask(0) is None
    np.testing.assert_array_equal(ds.load_image(2), rgb_image(8, 10, 2))
    (folder / "cols.csv").write_text("a.jpg,cat,dog\n")  # no header; one tag per column
    np.testing.assert_array_equal(FolderDataset(folder, tags_file="cols.csv").tags, [[1, 1]])


def test_json_tags_and_class_file(folder):
    (folder / "tags.json").write_text(
        json.dumps({"a.jpg": ["dog"], "b.png": "cat;dog", "e.png": []})
    )
    (folder / "classes.txt").write_text("background\ndog\ncat\nbird\n")
    ds = FolderDataset(folder, tags_file="tags.json", class_file="classes.txt")
    assert ds.class_names == ["background", "dog", "cat", "bird"]
    np.testing.assert_array_equal(ds.tags, [[1, 0, 0], [1, 1, 0], [0, 0, 0]])


def test_unknown_tag_names_file_and_line(folder):
    (folder / "classes.txt").write_text("cat\ndog\n")
    (folder / "tags.csv").write_text("image,tags\na.jpg,cat\nb.png,dog;zebra\n")
    with pytest.raises(
        DatasetError,
        match=r"tags\.csv:3: unknown tag\(s\) \['zebra'\] for image 'b\.png'.*classes\.txt",
    ):
        FolderDataset(folder, class_file="classes.txt")
    (folder / "tags.json").write_text('{\n  "a.jpg": ["cat"],\n  "b.png": ["horse"]\n}\n')
    with pytest.raises(DatasetError, match=r"tags\.json:3: unknown tag\(s\) \['horse'\]"):
        FolderDataset(folder, tags_file="tags.json", class_file="classes.txt")


def test_missing_files_are_named(folder, tmp_path):
    with pytest.raises(DatasetError, match=r"absent: dataset root not found"):
        FolderDataset(tmp_path / "absent")
    with pytest.raises(DatasetError, match=r"tags\.csv: tags file not found"):
        FolderDataset(folder)
    (folder / "tags.csv").write_text("a.jpg,cat\nzz.jpg,dog\n")
    with pytest.raises(DatasetError, match=r"1 listed images are missing .*zz\.jpg \(line 2\)"):
        FolderDataset(folder)
    (folder / "tags.csv").write_text("a.jpg,cat\na.jpg,dog\n")
    with pytest.raises(DatasetError, match=r"tags\.csv:2: image 'a\.jpg' already listed on line 1"):
        FolderDataset(folder)
    (folder / "tags.json").write_text("[1, 2]")
    with pytest.raises(DatasetError, match=r"tags\.json: expected a JSON object"):
        FolderDataset(folder, tags_file="tags.json")


def test_build_dataset_folder_no_masks_and_skip_warning(folder, caplog):
    (folder / "tags.csv").write_text("a.jpg,cat\nb.png,\ne.png,\n")
    cfg = load_config("base", ["data.type=folder", f"data.root={folder}"])
    assert class_names(cfg) == ["background", "cat"]
    with caplog.at_level(logging.WARNING, logger="dscnet.data"):
        train = build_dataset(cfg, "train", train=True)
    msgs = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert msgs == [f"skipped 2 images with no tags in {folder / 'tags.csv'}"]
    assert len(train) == 1
    item = build_dataset(cfg, "val", train=False)[1]
    assert item["id"] == "b" and item["mask"].shape == (8, 10) and (item["mask"] == 255).all()


def test_classes_txt_in_the_root_is_read_without_class_file(folder):
    # As in the VOC layout: the root's classes.txt fixes the class list and its order.
    (folder / "classes.txt").write_text("background\ndog\ncat\n")
    (folder / "tags.csv").write_text("a.jpg,cat\nb.png,dog;cat\n")
    ds = FolderDataset(folder)
    assert ds.class_names == ["background", "dog", "cat"]  # the file's order, not sorted
    np.testing.assert_array_equal(ds.tags, [[0, 1], [1, 1]])
    (folder / "tags.csv").write_text("a.jpg,cat\nb.png,dgo\n")  # a misspelt tag
    with pytest.raises(
        DatasetError, match=r"tags\.csv:2: unknown tag\(s\) \['dgo'\] for image 'b\.png' \(not in the class list .*classes\.txt\)"
    ):
        FolderDataset(folder)
    cfg = load_config("base", ["data.type=folder", f"data.root={folder}"])
    assert class_names(cfg) == ["background", "dog", "cat"]  # cheap: the class file alone
    with pytest.raises(DatasetError, match="'dgo'"):
        build_dataset(cfg, "train", train=True)
