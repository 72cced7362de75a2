"""Frequency-aware class sampling: images drawn about as often as the data holds them."""

from __future__ import annotations

import numpy as np
import pytest

from dscnet.config import load_config
from dscnet.data.samplers import GroupBatchSampler


def _imbalanced_tags() -> np.ndarray:
    """180 images of a frequent class 0 ("person"), 30 of class 1, 10 of class 2."""
    tags = np.zeros((200, 3), np.uint8)
    tags[:180, 0] = 1
    tags[170:, 1] = 1  # images 170..179 carry classes 0 and 1
    tags[190:, 2] = 1  # images 190..199 carry classes 1 and 2
    return tags


def _draws_per_image(class_sampling: str, steps: int = 2000) -> np.ndarray:
    s = GroupBatchSampler(_imbalanced_tags(), 10, 2, seed=0, class_sampling=class_sampling)
    flat = [i for step in range(steps) for _, members in s.global_groups(step) for i in members]
    return np.bincount(flat, minlength=200) / len(flat)


def test_frequency_draws_an_image_in_proportion_to_its_tags():
    share = _draws_per_image("frequency")
    # Expected share of image i: |tags(i)| / sum of all tags (180 + 30 + 10 = 220).
    person_only, class1_only, two_tags = share[:170].mean(), share[180:190].mean(), share[170:180].mean()
    assert person_only == pytest.approx(1 / 220, rel=0.05)
    assert class1_only == pytest.approx(1 / 220, rel=0.1)
    assert two_tags == pytest.approx(2 / 220, rel=0.1)


def test_uniform_over_classes_under_draws_the_frequent_class():
    share = _draws_per_image("uniform")
    # A third of the groups per class: a person-only image gets 1/3 * 1/180 of the draws,
    # a class-1-only image 1/3 * 1/30, six times more.
    assert share[:170].mean() == pytest.approx(1 / 540, rel=0.05)
    assert share[180:190].mean() == pytest.approx(1 / 90, rel=0.1)


def test_coco_configs_sample_by_frequency_voc_uniformly():
    for name in ("coco_vit", "coco_resnet"):
        assert load_config(name).data.sampler.class_sampling == "frequency"
    for name in ("voc_vit", "voc_resnet", "synth_cpu"):
        assert load_config(name).data.sampler.class_sampling == "uniform"
