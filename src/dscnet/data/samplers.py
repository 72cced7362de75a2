"""The group batch sampler: batches of G groups of K images that share a tag.

DSCNet's cross-image streams need, inside every batch, images that carry a common class
(docs/METHOD.md §2, "Groups"). Each step draws, for every group, a class and then K images
carrying it. The draw of step ``t`` depends only on ``(seed, t)``, so

- two runs with the same seed see the same batches;
- training resumes exactly where it stopped (``state_dict`` / ``load_state_dict``);
- with DDP, the global batch is ``world_size * G`` groups drawn once, and rank ``r``
  takes groups ``[r*G, (r+1)*G)``: the union over ranks equals the batch of a single
  process with ``world_size * G`` groups.

A class with fewer than K images is sampled *with replacement* (its images repeat in the
group) rather than dropped, so rare classes still get groups.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from dscnet.errors import CheckpointError, DatasetError

# Constants that separate the random streams derived from the same (seed, step).
_STREAM_GROUPS = 0x67726F75
_STREAM_AUG = 0x61756720


def sample_seed(seed: int, step: int, position: int, index: int) -> int:
    """Augmentation seed of the sample at ``position`` of the global batch of ``step``."""
    ss = np.random.SeedSequence([_STREAM_AUG, seed % 2**32, step, position, index])
    lo, hi = ss.generate_state(2, dtype=np.uint32)
    return (int(hi) << 31) ^ int(lo)


class GroupBatchSampler:
    """Infinite, deterministic batch sampler of ``G`` groups x ``K`` images per rank.

    Args:
        tags: multi-hot ``[N, C]`` (numpy or torch); images with no tag are never drawn.
        groups_per_batch: G, groups per rank and step.
        group_size: K, images per group (stored contiguously: group g = items g*K..g*K+K-1).
        seed: base seed.
        rank, world_size: DDP position; ranks get disjoint whole groups of one global draw.
        class_sampling: ``"uniform"`` over the classes that have at least one image, or
            ``"frequency"`` (proportional to each class's number of images).
        with_seeds: yield ``(index, augmentation_seed)`` pairs instead of plain indices
            (the training loader uses this so augmentation is independent of num_workers).
    """

    def __init__(
        self,
        tags: Any,
        groups_per_batch: int,
        group_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        class_sampling: str = "uniform",
        with_seeds: bool = False,
    ) -> None:
        tags = np.asarray(tags.cpu() if hasattr(tags, "cpu") else tags) > 0
        if tags.ndim != 2:
            raise ValueError(f"tags must be [N, C], got shape {tags.shape}")
        if groups_per_batch < 1 or group_size < 1:
            raise ValueError("groups_per_batch and group_size must be >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.groups_per_batch = int(groups_per_batch)
        self.group_size = int(group_size)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.with_seeds = bool(with_seeds)
        # Image pools per class, kept only for classes that have images.
        pools = [np.flatnonzero(tags[:, c]) for c in range(tags.shape[1])]
        self.classes = np.array([c for c, p in enumerate(pools) if len(p) > 0], dtype=np.int64)
        if len(self.classes) == 0:
            raise DatasetError("the training set has no image with a tag: nothing to sample")
        self.pools = [pools[c] for c in self.classes]
        counts = np.array([len(p) for p in self.pools], dtype=np.float64)
        if class_sampling == "uniform":
            self.class_probs = np.full(len(self.classes), 1.0 / len(self.classes))
        elif class_sampling == "frequency":
            self.class_probs = counts / counts.sum()
        else:
            raise ValueError(
                f"class_sampling must be 'uniform' or 'frequency', got {class_sampling!r}"
            )
        self._step = 0

    # -- the draw
    def global_groups(self, step: int) -> list[tuple[int, list[int]]]:
        """All ``world_size * G`` groups of ``step`` as ``(class, [K image indices])``."""
        rng = np.random.default_rng(
            np.random.SeedSequence([_STREAM_GROUPS, self.seed % 2**32, step])
        )
        n_groups = self.world_size * self.groups_per_batch
        picks = rng.choice(len(self.classes), size=n_groups, p=self.class_probs)
        groups = []
        for k in picks:
            pool = self.pools[k]
            replace = len(pool) < self.group_size
            members = rng.choice(pool, size=self.group_size, replace=replace)
            groups.append((int(self.classes[k]), [int(i) for i in members]))
        return groups

    def batch(self, step: int) -> list[Any]:
        """This rank's batch of ``step``: ``G*K`` indices (or ``(index, seed)`` pairs)."""
        per_rank = self.groups_per_batch * self.group_size
        flat = [i for _, members in self.global_groups(step) for i in members]
        start = self.rank * per_rank
        mine = flat[start : start + per_rank]
        if not self.with_seeds:
            return mine
        return [(i, sample_seed(self.seed, step, start + j, i)) for j, i in enumerate(mine)]

    def __iter__(self) -> Iterator[list[Any]]:
        while True:
            step = self._step
            self._step += 1
            yield self.batch(step)

    # -- resume
    @property
    def step(self) -> int:
        """Index of the next batch this sampler will yield."""
        return self._step

    def set_step(self, step: int) -> None:
        """Make the next batch the one of ``step``.

        A DataLoader with workers pre-fetches batches, so the sampler runs ahead of
        training: on resume, pass the number of batches the trainer actually consumed.
        """
        self._step = int(step)

    def state_dict(self) -> dict[str, int]:
        """``{"step", "seed"}``; see :meth:`set_step` about pre-fetching."""
        return {"step": self._step, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore the step counter (the seed must match the one this sampler was built with)."""
        if int(state.get("seed", self.seed)) != self.seed:
            raise CheckpointError(
                f"sampler state was saved with seed {state['seed']}, this run uses seed "
                f"{self.seed}: resuming would change the batch sequence"
            )
        self.set_step(int(state["step"]))
