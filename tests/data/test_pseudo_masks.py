"""data.pseudo_masks: the second stage trains on exported labels; evaluation keeps the truth."""

from __future__ import annotations

import numpy as np
import pytest

from dscnet.config import load_config
from dscnet.data.build import build_dataset
from dscnet.errors import DatasetError
from tests.data.datahelpers import save_palette_png


def _cfg(tiny_voc, folder):
    return load_config(
        "base",
        ["data.type=voc", f"data.root={tiny_voc['root']}", f"data.pseudo_masks={folder}",
         "data.train_aug.crop_size=16", "data.train_aug.scale_range=[1.0,1.0]", "data.train_aug.hflip=false"],
    )  # fmt: skip


def test_training_reads_the_pseudo_labels_and_evaluation_the_truth(tiny_voc, tmp_path):
    folder = tmp_path / "pseudo"
    pseudo = {}
    for n, sid in enumerate(tiny_voc["ids"][:3]):
        mask = np.full((20, 24), 255, dtype=np.uint8)  # uncertain everywhere ...
        mask[:, : 4 + n] = 0  # ... except a strip of background of a known width
        save_palette_png(folder / f"{sid}.png", mask)
        pseudo[sid] = mask
    cfg = _cfg(tiny_voc, folder)
    train = build_dataset(cfg, "train", train=True)
    for i in range(len(train)):
        sample = train.dataset.load_sample(i)
        np.testing.assert_array_equal(sample[1], pseudo[train.ids[i]])
    assert "with the masks of" in train.dataset.source
    # The same split for evaluation (CAM / pseudo-label scores) keeps the true masks.
    truth = build_dataset(cfg, "train", train=False)
    np.testing.assert_array_equal(truth.dataset.load_mask(0), tiny_voc["masks"][truth.ids[0]])


def test_missing_folder_or_labels_are_named(tiny_voc, tmp_path):
    with pytest.raises(DatasetError, match=r"pseudo-label folder not found \(data.pseudo_masks\)"):
        build_dataset(_cfg(tiny_voc, tmp_path / "nowhere"), "train", train=True)
    folder = tmp_path / "partial"
    save_palette_png(folder / f"{tiny_voc['ids'][0]}.png", np.zeros((20, 24), dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"2 of 3 images .* have no pseudo label .*dscnet pseudo"):
        build_dataset(_cfg(tiny_voc, folder), "train", train=True)
    # A label of the wrong size is refused when read, naming the file.
    for sid in tiny_voc["ids"][:3]:
        save_palette_png(folder / f"{sid}.png", np.zeros((10, 24), dtype=np.uint8))
    train = build_dataset(_cfg(tiny_voc, folder), "train", train=True)
    with pytest.raises(DatasetError, match="mask size 24x10 differs from image size 24x20"):
        train.dataset.load_sample(0)


def test_uncertain_pixels_can_be_read_as_background(tiny_voc, tmp_path):
    folder = tmp_path / "pseudo"
    for sid in tiny_voc["ids"][:3]:
        mask = np.full((20, 24), 255, dtype=np.uint8)
        mask[5:10, 6:12] = 1  # a confident object in an uncertain field
        save_palette_png(folder / f"{sid}.png", mask)
    ignored = build_dataset(_cfg(tiny_voc, folder), "train", train=True).dataset.load_sample(0)[1]
    cfg = _cfg(tiny_voc, folder)
    cfg.data.pseudo_uncertain = "background"
    filled = build_dataset(cfg, "train", train=True).dataset.load_sample(0)[1]
    assert (ignored == 255).sum() == 20 * 24 - 30 and not (filled == 255).any()
    np.testing.assert_array_equal(filled, np.where(ignored == 255, 0, ignored))
    # The crop padding the transform adds stays ignored: only the labels' 255 became background.
    cfg.data.train_aug.crop_size = 32
    item = build_dataset(cfg, "train", train=True)[0]
    assert (item["mask"] == 255).sum() == 32 * 32 - 20 * 24
    cfg.data.pseudo_uncertain = "nothing"
    from dscnet.errors import ConfigError

    with pytest.raises(ConfigError, match="data.pseudo_uncertain must be one of ignore, background"):
        build_dataset(cfg, "train", train=True)


def test_a_second_stage_config_without_its_labels_is_refused(tiny_voc):
    from dscnet.errors import ConfigError

    cfg = load_config("base", ["data.type=voc", f"data.root={tiny_voc['root']}", "data.pseudo_uncertain=background"])
    with pytest.raises(ConfigError, match=r"data.pseudo_uncertain=background .* data.pseudo_masks, which is not set"):
        build_dataset(cfg, "train", train=True)
    build_dataset(cfg, "val", train=False)  # evaluation reads the true masks either way
