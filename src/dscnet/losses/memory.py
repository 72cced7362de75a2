"""Per-class memories of past embeddings for the contrastive streams.

Both memories keep their state in registered buffers, so it is saved in ``state_dict``
(and checkpoints) and moves with ``.to(device)``. Inputs are always detached: the memory
is a set of constant keys.

Under DDP the *caller* gathers the embeddings of every rank (in rank order) before the
update, so that every rank applies the same update to the same state and the memories stay
identical on all ranks without any synchronisation of their own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _checked_items(embeddings: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor, Tensor]:
    """Detach and flatten; ``(embeddings, labels, valid)`` with ``valid`` False on labels
    outside ``[0, num_classes)`` (ignore, padding) and those labels set to 0.

    Invalid items are masked rather than dropped: dropping them (boolean indexing) would
    make the host wait for the device on every update (see ``dscnet.utils.host_sync``).
    """
    embeddings = embeddings.detach()
    labels = labels.detach().reshape(-1).long()
    if embeddings.shape[0] != labels.shape[0]:
        raise ValueError(
            f"memory update: {embeddings.shape[0]} embeddings but {labels.shape[0]} labels"
        )
    valid = (labels >= 0) & (labels < num_classes)
    return embeddings, torch.where(valid, labels, torch.zeros_like(labels)), valid


def class_counts(labels: Tensor, num_classes: int, weights: Tensor | None = None) -> Tensor:
    """Items per class, ``[num_classes]`` (long), of ``labels`` in ``[0, num_classes)``.

    ``torch.bincount`` would give the same numbers, but its output length depends on the
    largest label, a device value the host must wait for on a GPU; the length is known here.
    ``weights`` (bool or long, like ``labels``) counts only some items.
    """
    ones = torch.ones_like(labels) if weights is None else weights.to(labels.dtype)
    return torch.zeros(num_classes, dtype=torch.long, device=labels.device).scatter_add_(0, labels, ones)


class ClassQueueMemory(nn.Module):
    """One FIFO queue of ``size`` embeddings per class.

    Buffers: ``queue [num_classes, size, dim]``, ``ptr [num_classes]`` (next slot to write)
    and ``count [num_classes]`` (filled slots, at most ``size``).
    """

    def __init__(self, num_classes_with_bg: int, dim: int, size: int) -> None:
        super().__init__()
        if num_classes_with_bg < 1 or dim < 1 or size < 1:
            raise ValueError(
                f"ClassQueueMemory needs positive sizes, got classes={num_classes_with_bg}, "
                f"dim={dim}, size={size}"
            )
        self.num_classes = num_classes_with_bg
        self.dim = dim
        self.size = size
        self.register_buffer("queue", torch.zeros(num_classes_with_bg, size, dim))
        self.register_buffer("ptr", torch.zeros(num_classes_with_bg, dtype=torch.long))
        self.register_buffer("count", torch.zeros(num_classes_with_bg, dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, embeddings: Tensor, labels: Tensor) -> None:
        """Write ``embeddings [N, dim]`` into the queues of their ``labels [N]``.

        Items keep their arrival order within a class; when more than ``size`` items of a
        class arrive at once only the latest ``size`` are kept. Labels outside
        ``[0, num_classes)`` (e.g. 255) are ignored. Fully vectorised: the rank of each
        item within its class comes from a stable sort, so slots never collide.
        """
        emb, lab, valid = _checked_items(embeddings, labels, self.num_classes)
        if emb.shape[0] == 0:
            return
        emb = emb.to(device=self.queue.device, dtype=self.queue.dtype)
        lab, valid = lab.to(self.queue.device), valid.to(self.queue.device)
        n = lab.shape[0]
        # Invalid items sort after every class (key num_classes) and are never written.
        key = torch.where(valid, lab, torch.full_like(lab, self.num_classes))
        per_class = class_counts(key, self.num_classes + 1)
        order = torch.sort(key, stable=True).indices
        starts = per_class.cumsum(0) - per_class
        rank = torch.empty_like(key)
        rank[order] = torch.arange(n, device=key.device) - starts[key[order]]
        per_class = per_class[: self.num_classes]
        # Keep the latest `size` of each class: drop the first (count - size) arrivals.
        dropped = (per_class - self.size).clamp(min=0)
        keep = valid & (rank >= dropped[lab])
        slot = (self.ptr[lab] + rank - dropped[lab]) % self.size
        flat = self.queue.view(-1, self.dim)
        target = lab * self.size + slot
        # Items that are not kept rewrite the value of one kept item at its slot (or, when
        # none is kept, slot 0 with its own value): duplicate writes of equal values, so the
        # write needs no compaction and no host-side count.
        # (index_select with a 1-element index: indexing with a 0-dim tensor reads it on the host.)
        first = keep.to(torch.uint8).argmax().reshape(1)
        any_kept = keep.any()
        fallback_target = torch.where(any_kept, target.index_select(0, first), 0)
        fallback_value = torch.where(any_kept, emb.index_select(0, first), flat[:1])
        target = torch.where(keep, target, fallback_target)
        flat.index_put_((target,), torch.where(keep[:, None], emb, fallback_value))
        written = per_class.clamp(max=self.size)
        self.ptr.copy_((self.ptr + written) % self.size)
        self.count.copy_((self.count + written).clamp(max=self.size))

    def update(self, embeddings: Tensor, labels: Tensor) -> None:
        """Alias of :meth:`enqueue` (the interface shared with :class:`PrototypeMemory`)."""
        self.enqueue(embeddings, labels)

    def get(self) -> tuple[Tensor, Tensor]:
        """Filled slots: ``(feats [M, dim], labels [M])``, class-major, in slot order."""
        filled = torch.arange(self.size, device=self.count.device)[None, :] < self.count[:, None]
        labels = torch.arange(self.num_classes, device=self.count.device)[:, None].expand_as(filled)
        return self.queue[filled], labels[filled]

    def get_padded(self) -> tuple[Tensor, Tensor]:
        """Every slot: ``(feats [num_classes * size, dim], labels)``, label -1 on empty slots.

        The same entries as :meth:`get` (in the same order) plus the empty slots, with a
        shape that does not depend on the memory's state: no host-device sync on a GPU. The
        features are a copy (as :meth:`get`'s): a loss that uses them as keys must not see
        the enqueue that follows it before its backward pass.
        """
        filled = torch.arange(self.size, device=self.count.device)[None, :] < self.count[:, None]
        labels = torch.arange(self.num_classes, device=self.count.device)[:, None].expand_as(filled)
        labels = torch.where(filled, labels, torch.full_like(labels, -1))
        return self.queue.reshape(-1, self.dim).clone(), labels.reshape(-1)

    @torch.no_grad()
    def reset(self) -> None:
        """Empty every queue."""
        self.queue.zero_()
        self.ptr.zero_()
        self.count.zero_()


class PrototypeMemory(nn.Module):
    """One momentum (EMA) prototype per class, kept on the unit sphere.

    ``p_c <- normalize(m * p_c + (1 - m) * normalize(mean of the class's new embeddings))``;
    the first update of a class sets ``p_c`` to the normalised mean. Buffers:
    ``prototypes [num_classes, dim]`` and ``initialized [num_classes]`` (bool).
    """

    def __init__(self, num_classes_with_bg: int, dim: int, momentum: float = 0.9) -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"PrototypeMemory momentum must be in [0, 1), got {momentum}")
        self.num_classes = num_classes_with_bg
        self.dim = dim
        self.momentum = momentum
        self.register_buffer("prototypes", torch.zeros(num_classes_with_bg, dim))
        self.register_buffer("initialized", torch.zeros(num_classes_with_bg, dtype=torch.bool))

    @torch.no_grad()
    def update(self, embeddings: Tensor, labels: Tensor) -> None:
        """EMA update of the prototypes of the classes present in ``labels``."""
        emb, lab, valid = _checked_items(embeddings, labels, self.num_classes)
        if emb.shape[0] == 0:
            return
        emb = emb.to(device=self.prototypes.device, dtype=self.prototypes.dtype)
        lab, valid = lab.to(self.prototypes.device), valid.to(self.prototypes.device)
        weights = valid.to(emb.dtype)[:, None]
        sums = torch.zeros_like(self.prototypes).index_add_(0, lab, emb * weights)
        counts = class_counts(lab, self.num_classes, weights=valid)
        present = counts > 0
        means = F.normalize(sums / counts.clamp(min=1)[:, None], dim=1)
        ema = F.normalize(self.momentum * self.prototypes + (1 - self.momentum) * means, dim=1)
        new = torch.where(self.initialized[:, None], ema, means)
        self.prototypes.copy_(torch.where(present[:, None], new, self.prototypes))
        self.initialized.logical_or_(present)

    def get(self) -> tuple[Tensor, Tensor]:
        """Initialised prototypes: ``(feats [M, dim], labels [M])`` in class order."""
        labels = torch.arange(self.num_classes, device=self.prototypes.device)
        return self.prototypes[self.initialized], labels[self.initialized]

    def get_padded(self) -> tuple[Tensor, Tensor]:
        """Every prototype: ``(feats [num_classes, dim], labels)``, label -1 where not yet
        initialised (a fixed shape: no host-device sync, see :meth:`ClassQueueMemory.get_padded`)."""
        labels = torch.arange(self.num_classes, device=self.prototypes.device)
        return self.prototypes.clone(), torch.where(self.initialized, labels, torch.full_like(labels, -1))

    @torch.no_grad()
    def reset(self) -> None:
        """Forget every prototype."""
        self.prototypes.zero_()
        self.initialized.zero_()
