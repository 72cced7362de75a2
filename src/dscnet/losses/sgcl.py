"""SGCL: semantic-wise graph contrast over class nodes (docs/METHOD.md §2).

Equations and every design choice: docs/METHOD.md §2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dscnet.losses.memory import ClassQueueMemory, PrototypeMemory
from dscnet.losses.pgcl import (
    bank_terms,
    compute_dtype,
    reduce_anchor_losses,
    static_shapes_for,
    supcon_per_anchor,
)
from dscnet.utils.distributed import all_gather_variable, get_rank

__all__ = ["SemanticGraphContrast", "gather_nodes"]


def gather_nodes(
    z: Tensor, node_class: Tensor, node_image: Tensor
) -> tuple[Tensor, Tensor, Tensor, int]:
    """Nodes of every rank (rank order) as contrast keys; no-op on one process.

    ``z`` is gathered with gradient. Image ids are local batch indices, so they are made
    unique across ranks as ``rank * (max_id + 1) + id``. Returns
    ``(keys, key_class, key_image, offset)``: the local nodes are rows
    ``offset .. offset + N_local - 1`` of the keys; ``key_image[offset:...]`` is the local
    nodes' (remapped) image id.
    """
    keys, sizes = all_gather_variable(z, return_sizes=True)
    if len(sizes) == 1:
        return z, node_class, node_image, 0
    key_class = all_gather_variable(node_class)
    key_image = all_gather_variable(node_image)
    ranks = torch.repeat_interleave(
        torch.arange(len(sizes), device=z.device), torch.tensor(sizes, device=z.device)
    )
    span = key_image.max() + 1 if key_image.numel() else 0
    key_image = ranks * span + key_image
    return keys, key_class, key_image, sum(sizes[: get_rank()])


class SemanticGraphContrast(nn.Module):
    """Semantic-wise graph contrast (SGCL): SupCon over the graph-refined class nodes.

    Anchor: every node. Positives: nodes of the same class from *other* images and the
    memory entries of the class. Denominator: every other node (other classes of the same
    image included) and the whole memory. Nodes of every rank are keys under DDP; anchors
    stay local (see :func:`gather_nodes` and ``reduce_anchor_losses``).

    ``memory``: ``"queue"`` (``memory_size`` past nodes per class), ``"prototype"`` (one
    momentum prototype per class) or ``"none"``; ``memory_size=0`` also disables it. The
    memory is updated after the loss, in training mode only, with the detached nodes of all
    ranks. ``last_stats``: detached ``valid_anchors`` and ``mean_positives``.
    """

    def __init__(
        self,
        num_classes: int,
        temperature: float = 0.1,
        memory: str = "queue",
        memory_size: int = 64,
        momentum: float = 0.9,
        embed_dim: int = 128,
        static_shapes: bool | None = None,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"SGCL temperature must be > 0, got {temperature}")
        self.num_classes = num_classes
        self.temperature = temperature
        self.embed_dim = embed_dim
        self.static_shapes = static_shapes  # None: padded memory reads off the CPU (pgcl.static_shapes_for)
        if memory not in ("queue", "prototype", "none"):
            raise ValueError(f"SGCL memory must be 'queue', 'prototype' or 'none', got {memory!r}")
        self.memory: ClassQueueMemory | PrototypeMemory | None
        if memory == "none" or (memory == "queue" and memory_size <= 0):
            self.memory = None
        elif memory == "queue":
            self.memory = ClassQueueMemory(num_classes + 1, embed_dim, memory_size)
        else:
            self.memory = PrototypeMemory(num_classes + 1, embed_dim, momentum)
        self.last_stats: dict[str, Tensor] = {}

    def forward(self, node_embed: Tensor, node_class: Tensor, node_image: Tensor) -> Tensor:
        """SGCL loss of ``node_embed [N, d]`` (normalised here), classes ``[N]`` (0 = bg),
        images ``[N]`` (batch index). A scalar; 0 (on the graph) without positives."""
        if node_embed.dim() != 2:
            raise ValueError(f"SGCL node_embed must be [N, d], got {tuple(node_embed.shape)}")
        if self.memory is not None and node_embed.shape[1] != self.memory.dim:
            raise ValueError(
                f"SGCL node embeddings have {node_embed.shape[1]} dims but the memory was "
                f"built for embed_dim={self.memory.dim}"
            )
        z = F.normalize(compute_dtype(node_embed), dim=-1)
        node_class = node_class.to(z.device).long()
        node_image = node_image.to(z.device).long()
        keys, key_class, key_image, offset = gather_nodes(z, node_class, node_image)
        n, nk = z.shape[0], keys.shape[0]
        local_image = key_image[offset : offset + n]
        if self.memory is not None:
            self.memory.to(z.device)
            padded = static_shapes_for(z, self.static_shapes)
            mem_z, mem_y = self.memory.get_padded() if padded else self.memory.get()
            mem_z = mem_z.to(z.dtype)
        else:
            mem_z, mem_y = z.new_zeros(0, z.shape[1]), node_class.new_zeros(0)

        sim = (z / self.temperature) @ keys.T  # [n, Nk]
        not_self = torch.arange(nk, device=z.device)[None, :] != (
            offset + torch.arange(n, device=z.device)
        )[:, None]
        other_image = local_image[:, None] != key_image[None, :]
        pos = not_self & other_image & (node_class[:, None] == key_class[None, :])
        bank = bank_terms(z, node_class, mem_z, mem_y, self.num_classes + 1, self.temperature)
        per_anchor, n_pos = supcon_per_anchor(sim, pos, not_self, *bank)
        valid = n_pos > 0
        loss = reduce_anchor_losses(per_anchor, valid)

        self.last_stats = {
            "valid_anchors": valid.sum().detach(),
            "mean_positives": n_pos.sum().detach() / valid.sum().clamp(min=1),
        }
        if self.memory is not None and self.training:
            # `keys` already holds every rank's nodes in rank order: identical memories.
            self.memory.update(keys.detach(), key_class)
        return loss
