"""DSCL's cross-stream term: pixel embeddings against the graph nodes of the other images.

This is the coupling between the pixel stream (PGCL) and the semantic stream (SGCL):
a confident pixel of class c in image i is pulled to the graph-refined class-c nodes of the
*other* images of its group and pushed from their other nodes. Equations:
docs/METHOD.md §2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dscnet.losses.pgcl import (
    compute_dtype,
    group_pixels,
    reduce_anchor_losses,
    resize_labels,
    sample_group_anchors,
    static_shapes_for,
    supcon_per_anchor,
)

__all__ = ["CrossStreamContrast"]


class CrossStreamContrast(nn.Module):
    """Pixel-to-node contrast ``L_cross``.

    Anchors: the class-balanced sample of confident pixels of each group (as PGCL, at most
    ``max_anchors`` per group). Keys of a pixel of image i in group g: the nodes of the
    images of g other than i. Positives: those nodes of the pixel's class (SupCon average
    over all of them); the other keys are negatives. Pixels without a positive are skipped.
    Groups never span ranks, so under DDP the keys are local; only the anchor count is
    reduced over ranks (``reduce_anchor_losses``). ``last_stats``: ``anchors``,
    ``valid_anchors``.
    """

    def __init__(
        self,
        temperature: float = 0.1,
        max_anchors: int | None = 1024,
        ignore_index: int = 255,
        static_shapes: bool | None = None,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"cross-stream temperature must be > 0, got {temperature}")
        if max_anchors is not None and max_anchors < 1:
            raise ValueError(f"cross-stream max_anchors must be >= 1 or None, got {max_anchors}")
        self.temperature = temperature
        self.max_anchors = max_anchors
        self.ignore_index = ignore_index
        self.static_shapes = static_shapes  # None: fixed anchor width off the CPU (pgcl.static_shapes_for)
        self.last_stats: dict[str, Tensor] = {}

    def forward(
        self,
        embed: Tensor,
        labels: Tensor,
        node_embed: Tensor,
        node_class: Tensor,
        node_image: Tensor,
        group_size: int,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``embed [B, d, h, w]`` normalised pixels; ``labels [B, H, W]`` pseudo labels;
        ``node_embed [N, d]`` graph nodes of this batch (normalised here), ``node_class [N]``
        (0 = bg), ``node_image [N]`` (batch index); groups of ``group_size`` images."""
        if embed.dim() != 4 or node_embed.dim() != 2:
            raise ValueError(
                f"cross-stream expects embed [B, d, h, w] and node_embed [N, d], got "
                f"{tuple(embed.shape)} and {tuple(node_embed.shape)}"
            )
        if embed.shape[1] != node_embed.shape[1]:
            raise ValueError(
                f"cross-stream: pixel embeddings have {embed.shape[1]} dims but graph nodes "
                f"have {node_embed.shape[1]}; the pixel and node spaces must match "
                "(model.proj_dim == model.node_dim)"
            )
        z = compute_dtype(embed)
        nodes = F.normalize(node_embed.to(z.dtype), dim=-1)
        node_class = node_class.to(z.device).long()
        node_image = node_image.to(z.device).long()
        b, d, h, w = z.shape
        y = resize_labels(labels.to(z.device), (h, w))
        y = torch.where(y == self.ignore_index, torch.full_like(y, -1), y)
        zg, yg = group_pixels(z, y, group_size)
        # Every non-ignored label is a candidate class (the loss does not know C). Pseudo
        # labels lie below ignore_index, a bound known without reading the labels (the
        # largest label would cost a host-device sync on a GPU); absent classes do not
        # change the class-balanced sample.
        if self.ignore_index > 0:
            num_labels = self.ignore_index
        else:
            num_labels = int(yg.max()) + 1 if yg.numel() else 1
        static = static_shapes_for(z, self.static_shapes)
        index, mask = sample_group_anchors(
            yg, num_labels, self.max_anchors, generator, static_width=static
        )
        g, a = index.shape
        anchors = zg.gather(1, index[..., None].expand(-1, -1, d)).reshape(g * a, d)
        anchor_y = yg.gather(1, index).reshape(-1)
        groups = torch.arange(g, device=z.device)[:, None]
        anchor_image = (groups * group_size + index // (h * w)).reshape(-1)
        anchor_group = anchor_image // group_size

        sim = (anchors / self.temperature) @ nodes.T  # [G*A, N]
        key_mask = (anchor_group[:, None] == (node_image // group_size)[None, :]) & (
            anchor_image[:, None] != node_image[None, :]
        )
        pos = key_mask & (anchor_y[:, None] == node_class[None, :])
        per_anchor, n_pos = supcon_per_anchor(sim, pos, key_mask)
        valid = mask.reshape(-1) & (n_pos > 0)
        self.last_stats = {"anchors": mask.sum().detach(), "valid_anchors": valid.sum().detach()}
        return reduce_anchor_losses(per_anchor, valid)
