"""Fixed evaluation subsets: which images, and how they are named."""

from __future__ import annotations

import numpy as np
import pytest

from dscnet.config import load_config
from dscnet.data.build import build_dataset
from dscnet.data.subset import SubsetInfo, eval_subset, subset_indices
from dscnet.errors import ConfigError


def test_first_n_seeded_and_all():
    assert subset_indices(10, 3).tolist() == [0, 1, 2]
    assert subset_indices(10, None).tolist() == list(range(10))
    assert subset_indices(10, 50).tolist() == list(range(10))
    seeded = subset_indices(100, 7, seed=3)
    assert len(set(seeded.tolist())) == 7 and np.all(np.diff(seeded) > 0)
    assert np.array_equal(seeded, subset_indices(100, 7, seed=3))  # the same every time
    assert not np.array_equal(seeded, subset_indices(100, 7, seed=4))
    with pytest.raises(ConfigError, match="eval.val_subset must be null or >= 1, got 0"):
        subset_indices(10, 0)


def test_descriptions_name_split_and_images():
    assert SubsetInfo("val", 1449, 1449).describe() == "val, all 1449 images"
    assert SubsetInfo("val", 5000, 40504).describe() == "val, first 5000 of 40504 images"
    assert SubsetInfo("val", 5, 9, seed=3).describe() == "val, 5 of 9 images (seed 3)"
    assert SubsetInfo("val", 5, 9).as_dict() == {
        "split": "val", "images": 5, "split_images": 9, "subset": "first"
    }  # fmt: skip
    assert SubsetInfo("val", 9, 9).as_dict()["subset"] is None


def test_subset_view_serves_the_chosen_items():
    cfg = load_config("base", ["data.synth.num_val=6", "data.synth.image_size=32"])
    val = build_dataset(cfg, "val", train=False)
    part, info = eval_subset(val, "val", 3, seed=1)
    chosen = subset_indices(6, 3, seed=1)
    assert info.describe() == "val, 3 of 6 images (seed 1)" and len(part) == 3
    assert part.ids == [val.ids[i] for i in chosen]
    assert (part[1]["image"] == val[int(chosen[1])]["image"]).all()
    whole, info = eval_subset(val, "val", None)
    assert whole is val and not info.is_subset
