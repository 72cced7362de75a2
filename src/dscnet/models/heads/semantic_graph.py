"""SGCL's class nodes and the attention graph over them (docs/METHOD.md §2).

``class_nodes`` turns backbone features and CAMs into one node per (image, tagged class),
plus an optional background node per image; ``SemanticGraph`` maps the nodes to
``node_dim`` with the MLP ``g_s`` and refines them by dense attention message passing among
all nodes of the batch (of every rank under DDP, see ``gather``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dscnet.utils.distributed import all_gather_variable, get_rank, get_world_size

__all__ = ["SemanticGraph", "class_nodes", "label_shares"]


def label_shares(labels: Tensor, num_classes: int, size: tuple[int, int], ignore_index: int = 255) -> Tensor:
    """``[B, C+1, h, w]``: the share of each feature cell's pixels that ``labels [B, H, W]``
    give to each class (0 = background); ignored pixels count for no class."""
    known = labels != ignore_index
    onehot = F.one_hot(labels.masked_fill(~known, 0), num_classes + 1).permute(0, 3, 1, 2)
    onehot = onehot.to(torch.float32) * known[:, None]
    return F.adaptive_avg_pool2d(onehot, size)


def class_nodes(
    features: Tensor,
    cams: Tensor,
    tags: Tensor,
    bg_node: bool = True,
    eps: float = 1e-5,
    valid: Tensor | None = None,
    bg_weights: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """CAM-weighted class nodes.

    ``features [B, D, h, w]``; ``cams [B, C, h, w]`` in [0, 1] (detached here; resized
    bilinearly to ``h x w`` if needed); ``tags [B, C]`` multi-hot. For every tagged
    (image b, class c): ``node = sum_x M_c(x) F(x) / (sum_x M_c(x) + eps)``. With ``bg_node``
    each image also gets ``M_bg = 1 - max_{c tagged} M_c`` (1 everywhere without tags).
    ``valid [B, H, W]`` (bool, False on crop padding), when given, multiplies every weight by
    the share of real pixels in each feature cell, so no node pools padding (without it, the
    background node of a half-padded crop is about half padding). ``bg_weights [B, 1, h, w]``
    replaces ``1 - max M_c`` as the background map (nodes from pseudo-label regions).

    Returns ``(nodes [N, D], node_class [N], node_image [N])`` ordered by image, then class
    (background, class 0, first); foreground classes are numbered 1..C. Gradients reach
    ``features`` only.
    """
    if features.dim() != 4 or cams.dim() != 4 or tags.dim() != 2:
        raise ValueError(
            "class_nodes expects features [B, D, h, w], cams [B, C, h, w], tags [B, C]; got "
            f"{tuple(features.shape)}, {tuple(cams.shape)}, {tuple(tags.shape)}"
        )
    b, _, h, w = features.shape
    if cams.shape[0] != b or tags.shape != cams.shape[:2]:
        raise ValueError(
            f"class_nodes: cams {tuple(cams.shape)} and tags {tuple(tags.shape)} do not match "
            f"features {tuple(features.shape)}"
        )
    cams = cams.detach().to(features.dtype)
    if tuple(cams.shape[-2:]) != (h, w):
        cams = F.interpolate(cams, size=(h, w), mode="bilinear", align_corners=False)
    present = tags.detach() > 0.5  # [B, C]
    weights = cams * present[:, :, None, None]
    real = None
    if valid is not None:
        # Share of image (not padding) pixels in each feature cell.
        real = F.adaptive_avg_pool2d(valid[:, None].to(features.dtype), (h, w))
    if bg_node and bg_weights is not None:
        bg = bg_weights.detach().to(features.dtype)
    elif bg_node:
        bg = 1.0 - weights.amax(dim=1, keepdim=True) if weights.shape[1] else cams.new_ones(
            b, 1, h, w
        )
    if bg_node:
        weights = torch.cat([bg, weights], dim=1)  # channel 0 = background
        present = torch.cat([present.new_ones(b, 1), present], dim=1)
        first_class = 0
    else:
        first_class = 1
    if real is not None:
        weights = weights * real
    flat_w = weights.flatten(2)  # [B, C', hw]
    # All weighted sums in one batched matmul: [B, C', hw] @ [B, hw, D].
    sums = flat_w @ features.flatten(2).transpose(1, 2)
    means = sums / (flat_w.sum(-1, keepdim=True) + eps)
    image, channel = present.nonzero(as_tuple=True)  # row-major: by image, then class
    return means[image, channel], channel + first_class, image


class SemanticGraph(nn.Module):
    """``g_s`` MLP then ``rounds`` rounds of dense attention message passing.

    Per round: ``H <- LayerNorm(H + W_o softmax(Q K^T / sqrt(d_h) + mask) V)`` with
    ``Q, K, V = H W_q, H W_k, H W_v`` split into ``heads`` heads. Every node attends to every
    node of the batch (itself included) unless ``attn_mask`` restricts it.

    With ``gather`` (default) and DDP, the nodes of every rank are gathered (with gradient)
    before the graph, so that the message passing sees the same node set as one process on
    the combined batch; the rows of the local nodes are returned. Without DDP it is a no-op.
    """

    def __init__(
        self,
        in_dim: int,
        node_dim: int = 128,
        rounds: int = 2,
        heads: int = 1,
        gather: bool = True,
    ) -> None:
        super().__init__()
        if node_dim % heads:
            raise ValueError(f"SemanticGraph node_dim {node_dim} is not divisible by heads {heads}")
        if rounds < 0:
            raise ValueError(f"SemanticGraph rounds must be >= 0, got {rounds}")
        self.node_dim = node_dim
        self.rounds = rounds
        self.heads = heads
        self.gather = gather
        self.g_s = nn.Sequential(
            nn.Linear(in_dim, node_dim),
            nn.LayerNorm(node_dim),  # LN, not BN: a batch may hold a single node
            nn.ReLU(inplace=True),
            nn.Linear(node_dim, node_dim),
        )
        self.qkv = nn.ModuleList(nn.Linear(node_dim, 3 * node_dim) for _ in range(rounds))
        self.out = nn.ModuleList(nn.Linear(node_dim, node_dim) for _ in range(rounds))
        self.norm = nn.ModuleList(nn.LayerNorm(node_dim) for _ in range(rounds))

    def forward(self, nodes: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """Refine ``nodes [N, in_dim]`` -> ``[N, node_dim]`` (not normalised).

        ``attn_mask [N_all, N_all]`` bool, True = may attend, over the (gathered) node set;
        the diagonal is always allowed so that no softmax row is empty.
        """
        world = get_world_size()
        if self.gather and world > 1:
            all_nodes, sizes = all_gather_variable(nodes, return_sizes=True)
            start = sum(sizes[: get_rank()])
        else:
            all_nodes, start = nodes, 0
        h = self.g_s(all_nodes)
        n = h.shape[0]
        mask = None
        if attn_mask is not None:
            if tuple(attn_mask.shape) != (n, n):
                raise ValueError(f"attn_mask must be [{n}, {n}], got {tuple(attn_mask.shape)}")
            mask = attn_mask.to(torch.bool) | torch.eye(n, dtype=torch.bool, device=h.device)
        dh = self.node_dim // self.heads
        for qkv, out, norm in zip(self.qkv, self.out, self.norm):
            q, k, v = qkv(h).view(n, 3, self.heads, dh).permute(1, 2, 0, 3)  # 3 x [heads, N, dh]
            # softmax(Q K^T / sqrt(d_h)) V; bool mask True = may attend.
            msg = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            msg = msg.transpose(0, 1).reshape(n, self.node_dim)
            h = norm(h + out(msg))
        return h[start : start + nodes.shape[0]]
