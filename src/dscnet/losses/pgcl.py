"""PGCL: pixel-wise group contrast (docs/METHOD.md §2, equation by equation).

Also hosts the pieces shared by the three contrastive terms: grouping a batch's pixels,
class-balanced anchor sampling, the masked supervised-contrastive (SupCon) kernel and the
DDP-exact reduction of per-anchor losses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dscnet.losses.memory import ClassQueueMemory, class_counts
from dscnet.utils.distributed import all_gather_variable, all_reduce_sum, get_world_size

__all__ = [
    "PixelGroupContrast",
    "bank_terms",
    "group_pixels",
    "reduce_anchor_losses",
    "resize_labels",
    "sample_group_anchors",
    "static_shapes_for",
    "supcon_per_anchor",
]


def static_shapes_for(x: Tensor, setting: bool | None) -> bool:
    """Whether a loss pads to fixed shapes: ``setting``, or when None (auto) on any device
    but the CPU. A data-dependent shape (how many anchors, how full a memory is) must be
    read by the host, which on a GPU waits for every queued kernel; on a CPU that costs
    nothing and the smaller, unpadded tensors are faster."""
    return x.device.type != "cpu" if setting is None else bool(setting)


def compute_dtype(x: Tensor) -> Tensor:
    """Half-precision inputs are upcast to float32: exp(s / tau) over many keys needs range."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def resize_labels(labels: Tensor, size: tuple[int, int]) -> Tensor:
    """Pseudo labels ``[B, H, W]`` to ``[B, h, w]`` by nearest neighbour (cell centres)."""
    if labels.dim() != 3:
        raise ValueError(f"labels must be [B, H, W], got shape {tuple(labels.shape)}")
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels.long()
    # nearest-exact samples the centre of each cell (plain "nearest" takes its corner).
    out = F.interpolate(labels[:, None].float(), size=size, mode="nearest-exact")
    return out[:, 0].long()


def group_pixels(embed: Tensor, labels: Tensor, group_size: int) -> tuple[Tensor, Tensor]:
    """Pixels of each group: ``embed [B, d, h, w]``, ``labels [B, h, w]`` ->
    ``(z [G, K*h*w, d], y [G, K*h*w])``. Pixel ``p`` of group ``g`` lies in image
    ``g*K + p // (h*w)``."""
    b, d, h, w = embed.shape
    if group_size < 1 or b % group_size:
        raise ValueError(f"batch of {b} images is not a whole number of groups of {group_size}")
    if tuple(labels.shape) != (b, h, w):
        raise ValueError(f"labels {tuple(labels.shape)} do not match embeddings {(b, h, w)}")
    g = b // group_size
    z = embed.permute(0, 2, 3, 1).reshape(g, group_size * h * w, d)
    return z, labels.reshape(g, group_size * h * w)


def sample_group_anchors(
    labels: Tensor,
    num_labels: int,
    max_anchors: int | None,
    generator: torch.Generator | None = None,
    static_width: bool = False,
) -> tuple[Tensor, Tensor]:
    """Class-balanced random sample of confident pixels, for every group at once.

    ``labels [G, P]``: values in ``[0, num_labels)`` are confident, anything else (255) is
    ignored. Each group keeps at most ``quota = max(max_anchors // n_present, 1)`` random
    pixels of every class present (all of them when the class is smaller), and never more
    than ``max_anchors`` in all (only binding when more classes than ``max_anchors`` are
    present; then the lowest class ids win). ``max_anchors=None`` keeps every confident
    pixel. Vectorised: random keys, a stable sort by class, then each pixel's rank in its
    class.

    Returns ``(index [G, A], mask [G, A])``: pixel indices into ``P``, padded to the largest
    group (``mask`` False on padding). With ``static_width``, ``A = min(max_anchors, P)``
    (``P`` without a cap) whatever the labels: the same anchors, more padding, and no
    host-device sync (the largest group's count is a device value).
    """
    g, p = labels.shape
    device = labels.device
    confident = (labels >= 0) & (labels < num_labels)
    cls = torch.where(confident, labels.long(), torch.full_like(labels, num_labels).long())
    # Sort by (class, random key): shuffle by the key, then a stable sort by class.
    keys = torch.rand(g, p, generator=generator, device=device)
    shuffle = keys.argsort(dim=1)
    cls_sorted, by_class = torch.sort(cls.gather(1, shuffle), dim=1, stable=True)
    order = shuffle.gather(1, by_class)
    counts = torch.zeros(g, num_labels + 1, dtype=torch.long, device=device)
    counts.scatter_add_(1, cls, torch.ones_like(cls))
    starts = counts.cumsum(1) - counts
    rank = torch.arange(p, device=device)[None, :] - starts.gather(1, cls_sorted)
    selected = cls_sorted < num_labels
    if max_anchors is not None:
        present = (counts[:, :num_labels] > 0).sum(1)
        quota = (max_anchors // present.clamp(min=1)).clamp(min=1)
        selected = selected & (rank < quota[:, None])
        selected = selected & (selected.cumsum(1) <= max_anchors)
    slot = selected.cumsum(1) - 1
    if static_width:
        n_anchor = p if max_anchors is None else min(int(max_anchors), p)
    else:
        n_anchor = int(selected.sum(1).max()) if g > 0 and p > 0 else 0
    # Scatter into one spare column that takes every unselected pixel, then drop it: the
    # same result as indexing with selected.nonzero(), without its host-device sync.
    target = torch.where(selected, slot, torch.full_like(slot, n_anchor))
    index = torch.zeros(g, n_anchor + 1, dtype=torch.long, device=device)
    index.scatter_(1, target, order)
    mask = torch.zeros(g, n_anchor + 1, dtype=torch.bool, device=device)
    mask.scatter_(1, target, selected)
    # Padded slots point at pixel 0, as before (only the spare column took other writes).
    index, mask = index[:, :n_anchor], mask[:, :n_anchor]
    return index, mask


def supcon_per_anchor(
    sim: Tensor,
    pos: Tensor,
    key_mask: Tensor,
    bank_sim: Tensor | None = None,
    bank_pos_sum: Tensor | None = None,
    bank_pos_count: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Supervised contrastive loss (Khosla et al. 2020, L_out) of every anchor row.

    ``sim [..., Nk]`` = z_a . z_k / tau; ``key_mask`` = keys in the denominator (self
    excluded by the caller); ``pos`` (a subset of ``key_mask``) = positives. Returns
    ``(loss [...], n_pos [...])`` with
    ``loss_a = -1/|P(a)| sum_{p in P(a)} log(exp(s_ap) / sum_{k in K(a)} exp(s_ak))
    = logsumexp_{k in K(a)} s_ak - mean_{p in P(a)} s_ap``; rows without positives get 0
    (callers mask them with ``n_pos > 0``).

    Optional memory bank, whose keys are all valid for every anchor: ``bank_sim [..., M]``
    (similarities to every memory entry, joins the denominator), ``bank_pos_sum [...]`` (sum
    of the similarities to the memory positives, computed from per-class sums) and
    ``bank_pos_count [...]``. Keeping the bank apart avoids masks and concatenations of
    ``[..., Nk + M]`` tensors. Masked keys are filled with the dtype's most negative finite
    value, never -inf, so that rows without any key stay finite in forward and backward.
    """
    fill = torch.finfo(sim.dtype).min
    lse = sim.masked_fill(~key_mask, fill).logsumexp(dim=-1)
    pos_sum = sim.masked_fill(~pos, 0.0).sum(-1)
    n_pos = pos.sum(-1)
    if bank_sim is not None and bank_sim.shape[-1] > 0:
        lse = torch.logaddexp(lse, bank_sim.logsumexp(dim=-1))
        pos_sum = pos_sum + bank_pos_sum
        n_pos = n_pos + bank_pos_count
    loss = lse - pos_sum / n_pos.clamp(min=1).to(sim.dtype)
    return torch.where(n_pos > 0, loss, torch.zeros_like(loss)), n_pos


def bank_terms(
    anchors: Tensor,
    anchor_y: Tensor,
    bank_z: Tensor,
    bank_y: Tensor,
    num_labels: int,
    temperature: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Memory-bank inputs of :func:`supcon_per_anchor` for ``anchors [..., d]``.

    Returns ``(bank_sim [..., M], bank_pos_sum [...], bank_pos_count [...])``: the positive
    sum uses per-class sums of the bank, ``z_a . sum_{m of class y_a} z_m / tau``. Anchor
    labels outside ``[0, num_labels)`` (padding, -1) get no positive; bank entries labelled
    -1 (the empty slots of ``get_padded``) are no key at all (their similarity is the most
    negative finite value, as ``supcon_per_anchor`` masks keys).
    """
    # Scale the [.., d] anchors, not the [.., M] similarities: one pass less over M.
    query = anchors / temperature
    filled = (bank_y >= 0) & (bank_y < num_labels)
    bank_y = torch.where(filled, bank_y, torch.zeros_like(bank_y))
    bank_sim = (query @ bank_z.T).masked_fill(~filled, torch.finfo(query.dtype).min)
    class_sum = bank_z.new_zeros(num_labels, bank_z.shape[-1]).index_add_(
        0, bank_y, bank_z * filled[:, None].to(bank_z.dtype)
    )
    class_count = class_counts(bank_y, num_labels, weights=filled)
    known = (anchor_y >= 0) & (anchor_y < num_labels)
    y = torch.where(known, anchor_y, torch.zeros_like(anchor_y))
    pos_sum = (query * class_sum[y]).sum(-1)
    pos_count = torch.where(known, class_count[y], torch.zeros_like(y))
    return bank_sim, torch.where(known, pos_sum, torch.zeros_like(pos_sum)), pos_count


def reduce_anchor_losses(per_anchor: Tensor, valid: Tensor) -> Tensor:
    """Mean of ``per_anchor[valid]`` over the anchors of *all* ranks.

    Rank loss = ``world_size * sum_local / count_global``: the mean of the rank losses (what
    DDP's gradient averaging optimises) is then exactly the mean over every valid anchor of
    the combined batch, i.e. the single-process loss. 0 (still on the graph) when no anchor
    is valid anywhere.
    """
    total = torch.where(valid, per_anchor, torch.zeros_like(per_anchor)).sum()
    count = all_reduce_sum(valid.sum())
    return total * get_world_size() / count.clamp(min=1).to(total.dtype)


class PixelGroupContrast(nn.Module):
    """Pixel-wise group contrast (PGCL).

    Anchors: a class-balanced sample (at most ``max_anchors`` per group) of the confident
    pixels of all K images of a group. Keys: the group's other anchors and the per-class
    pixel memory. Positives: same pseudo class (any image of the group, self excluded, and
    memory entries of the class); negatives: every other class, background included. All
    groups are computed in one batched ``[G, A, A]`` similarity plus ``[G, A, M]`` to the
    memory.

    After each forward in training mode, the sampled anchors (detached; gathered from every
    rank under DDP) are enqueued into the memory. ``last_stats`` holds detached scalar
    tensors for logging: ``anchors``, ``valid_anchors`` and ``mean_positives``.
    """

    def __init__(
        self,
        num_classes: int,
        temperature: float = 0.1,
        max_anchors: int | None = 1024,
        memory_size: int = 256,
        ignore_index: int = 255,
        embed_dim: int = 128,
        static_shapes: bool | None = None,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"PGCL temperature must be > 0, got {temperature}")
        if max_anchors is not None and max_anchors < 1:
            raise ValueError(f"PGCL max_anchors must be >= 1 or None, got {max_anchors}")
        self.num_classes = num_classes
        self.temperature = temperature
        self.max_anchors = max_anchors
        self.ignore_index = ignore_index
        self.embed_dim = embed_dim
        self.static_shapes = static_shapes
        self.memory = (
            ClassQueueMemory(num_classes + 1, embed_dim, memory_size) if memory_size > 0 else None
        )
        self.last_stats: dict[str, Tensor] = {}

    def memory_keys(self, like: Tensor, padded: bool = False) -> tuple[Tensor, Tensor]:
        """Memory entries cast to ``like``'s device and dtype (empty without a memory);
        with ``padded``, every slot, empty ones labelled -1 (``ClassQueueMemory.get_padded``)."""
        if self.memory is None:
            return like.new_zeros(0, like.shape[-1]), torch.zeros(
                0, dtype=torch.long, device=like.device
            )
        self.memory.to(like.device)
        feats, labels = self.memory.get_padded() if padded else self.memory.get()
        return feats.to(like.dtype), labels

    def forward(
        self,
        embed: Tensor,
        labels: Tensor,
        group_size: int,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """PGCL loss of ``embed [B, d, h, w]`` (L2-normalised) with pseudo ``labels [B, H, W]``.

        ``labels`` are resized to ``h x w`` by nearest neighbour; images ``g*K..g*K+K-1``
        form group ``g``. ``generator`` (on ``embed``'s device) drives anchor sampling.
        Returns a scalar, 0 (connected to the graph) when nothing has a positive.
        """
        if embed.dim() != 4:
            raise ValueError(f"PGCL embed must be [B, d, h, w], got {tuple(embed.shape)}")
        if self.memory is not None and embed.shape[1] != self.memory.dim:
            raise ValueError(
                f"PGCL embeddings have {embed.shape[1]} channels but the memory was built "
                f"for embed_dim={self.memory.dim}"
            )
        z = compute_dtype(embed)
        y = resize_labels(labels.to(z.device), tuple(z.shape[-2:]))
        y = torch.where(y == self.ignore_index, torch.full_like(y, -1), y)
        zg, yg = group_pixels(z, y, group_size)
        static = static_shapes_for(z, self.static_shapes)
        index, mask = sample_group_anchors(
            yg, self.num_classes + 1, self.max_anchors, generator, static_width=static
        )
        d = zg.shape[-1]
        anchors = zg.gather(1, index[..., None].expand(-1, -1, d))  # [G, A, d]
        anchor_y = yg.gather(1, index)  # [G, A]
        mem_z, mem_y = self.memory_keys(anchors, padded=static)
        a = index.shape[1]

        sim = (anchors / self.temperature) @ anchors.transpose(1, 2)  # [G, A, A]
        not_self = ~torch.eye(a, dtype=torch.bool, device=z.device)
        key_mask = mask[:, None, :] & not_self
        pos = key_mask & (anchor_y[:, :, None] == anchor_y[:, None, :])
        # Memory keys: similarities [G, A, M], positives through per-class sums.
        bank = bank_terms(anchors, anchor_y, mem_z, mem_y, self.num_classes + 1, self.temperature)
        per_anchor, n_pos = supcon_per_anchor(sim, pos, key_mask, *bank)
        valid = mask & (n_pos > 0)
        loss = reduce_anchor_losses(per_anchor, valid)

        self.last_stats = {
            "anchors": mask.sum().detach(),
            "valid_anchors": valid.sum().detach(),
            "mean_positives": (n_pos * valid).sum().detach() / valid.sum().clamp(min=1),
        }
        if self.memory is not None and self.training:
            # Every rank enqueues the anchors of all ranks, in rank order: identical memories.
            # Padding slots go in labelled -1, which the memory skips (no boolean indexing).
            new_z = all_gather_variable(anchors.reshape(-1, d).detach())
            new_y = all_gather_variable(torch.where(mask, anchor_y, -1).reshape(-1))
            self.memory.enqueue(new_z, new_y)
        return loss
