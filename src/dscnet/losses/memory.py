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


def _valid_items(embeddings: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Detach, flatten and drop items whose label is outside ``[0, num_classes)`` (ignore)."""
    embeddings = embeddings.detach()
    labels = labels.detach().reshape(-1).long()
    if embeddings.shape[0] != labels.shape[0]:
        raise ValueError(
            f"memory update: {embeddings.shape[0]} embeddings but {labels.shape[0]} labels"
        )
    keep = (labels >= 0) & (labels < num_classes)
    return embeddings[keep], labels[keep]


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
        emb, lab = _valid_items(embeddings, labels, self.num_classes)
        if emb.shape[0] == 0:
            return
        emb = emb.to(device=self.queue.device, dtype=self.queue.dtype)
        lab = lab.to(self.queue.device)
        n = lab.shape[0]
        per_class = torch.bincount(lab, minlength=self.num_classes)
        order = torch.sort(lab, stable=True).indices
        starts = per_class.cumsum(0) - per_class
        rank = torch.empty_like(lab)
        rank[order] = torch.arange(n, device=lab.device) - starts[lab[order]]
        # Keep the latest `size` of each class: drop the first (count - size) arrivals.
        dropped = (per_class - self.size).clamp(min=0)
        keep = rank >= dropped[lab]
        lab, emb, rank = lab[keep], emb[keep], rank[keep] - dropped[lab[keep]]
        slot = (self.ptr[lab] + rank) % self.size
        self.queue[lab, slot] = emb
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
        emb, lab = _valid_items(embeddings, labels, self.num_classes)
        if emb.shape[0] == 0:
            return
        emb = emb.to(device=self.prototypes.device, dtype=self.prototypes.dtype)
        lab = lab.to(self.prototypes.device)
        sums = torch.zeros_like(self.prototypes).index_add_(0, lab, emb)
        counts = torch.bincount(lab, minlength=self.num_classes)
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

    @torch.no_grad()
    def reset(self) -> None:
        """Forget every prototype."""
        self.prototypes.zero_()
        self.initialized.zero_()
