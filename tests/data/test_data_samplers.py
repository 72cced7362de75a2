"""GroupBatchSampler: shared tags, determinism, DDP union, resume, rare classes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from dscnet.data.samplers import GroupBatchSampler, sample_seed
from dscnet.errors import CheckpointError, DatasetError


def _tags(n: int = 60, c: int = 5, seed: int = 0) -> np.ndarray:
    tags = (np.random.default_rng(seed).random((n, c)) < 0.3).astype(np.uint8)
    tags[:3] = 0  # untagged images must never be drawn
    return tags


def _take(sampler: GroupBatchSampler, n: int) -> list:
    return list(itertools.islice(iter(sampler), n))


def test_groups_share_a_tag_and_members_are_distinct():
    tags = _tags()
    s = GroupBatchSampler(tags, groups_per_batch=4, group_size=3, seed=0)
    for step, batch in enumerate(_take(s, 20)):
        assert len(batch) == 12 and all(isinstance(i, int) for i in batch)
        groups = s.global_groups(step)
        for g, (cls, members) in enumerate(groups):
            assert batch[g * 3 : g * 3 + 3] == members
            assert tags[members, cls].all()  # every member carries the group's class
            assert len(set(members)) == 3  # every class here has >= 3 images
        assert not set(batch) & {0, 1, 2}


def test_same_seed_same_batches_other_seed_differs():
    tags = _tags()
    a = _take(GroupBatchSampler(tags, 4, 2, seed=7), 10)
    b = _take(GroupBatchSampler(torch.from_numpy(tags), 4, 2, seed=7), 10)
    c = _take(GroupBatchSampler(tags, 4, 2, seed=8), 10)
    assert a == b and a != c


def test_ddp_ranks_take_disjoint_groups_whose_union_is_the_single_process_batch():
    tags = _tags()
    world, g, k = 3, 2, 2
    single = GroupBatchSampler(tags, g * world, k, seed=3, with_seeds=True)
    ranks = [
        GroupBatchSampler(tags, g, k, seed=3, rank=r, world_size=world, with_seeds=True)
        for r in range(world)
    ]
    for step in range(6):
        joined = [item for r in ranks for item in r.batch(step)]
        assert joined == single.batch(step)  # indices and augmentation seeds alike


def test_resume_continues_the_exact_sequence():
    tags = _tags()
    first = GroupBatchSampler(tags, 3, 2, seed=1)
    full = _take(first, 9)
    assert first.state_dict() == {"step": 9, "seed": 1}
    resumed = GroupBatchSampler(tags, 3, 2, seed=1)
    resumed.load_state_dict({"step": 5, "seed": 1})
    assert _take(resumed, 4) == full[5:]
    with pytest.raises(CheckpointError, match="saved with seed 1, this run uses seed 2"):
        GroupBatchSampler(tags, 3, 2, seed=2).load_state_dict({"step": 5, "seed": 1})


def test_rare_class_is_sampled_with_replacement():
    tags = np.zeros((10, 2), np.uint8)
    tags[:, 0] = 1
    tags[4, 1] = 1  # class 1 has a single image
    s = GroupBatchSampler(tags, 8, 3, seed=0)
    rare = [m for step in range(10) for cls, m in s.global_groups(step) if cls == 1]
    assert rare and all(m == [4, 4, 4] for m in rare)


def test_empty_classes_never_drawn_and_frequency_weighting():
    tags = np.zeros((100, 3), np.uint8)
    tags[:90, 0] = 1
    tags[90:, 1] = 1  # class 2 has no image
    uni = GroupBatchSampler(tags, 10, 2, seed=0, class_sampling="uniform")
    freq = GroupBatchSampler(tags, 10, 2, seed=0, class_sampling="frequency")
    cu = [c for step in range(100) for c, _ in uni.global_groups(step)]
    cf = [c for step in range(100) for c, _ in freq.global_groups(step)]
    assert 2 not in cu and 2 not in cf
    assert abs(np.mean(np.array(cu) == 0) - 0.5) < 0.06
    assert abs(np.mean(np.array(cf) == 0) - 0.9) < 0.04


def test_no_tagged_image_is_an_error():
    with pytest.raises(DatasetError, match="no image with a tag"):
        GroupBatchSampler(np.zeros((5, 3)), 2, 2)


def test_augmentation_seeds_depend_on_step_and_position():
    s = GroupBatchSampler(_tags(), 2, 2, seed=4, with_seeds=True)
    batch = s.batch(0)
    assert [i for i, _ in batch] == GroupBatchSampler(_tags(), 2, 2, seed=4).batch(0)
    seeds = [sd for _, sd in batch]
    assert seeds[0] == sample_seed(4, 0, 0, batch[0][0])
    assert len(set(seeds)) == 4 and all(0 <= sd < 2**63 for sd in seeds)
    assert {sd for _, sd in s.batch(1)}.isdisjoint(seeds)
