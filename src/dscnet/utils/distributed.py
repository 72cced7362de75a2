"""Cross-rank gather helpers for the contrastive losses.

Every helper is a no-op (returns its input) when ``torch.distributed`` is not initialised
or the world has a single rank, so that the losses run unchanged on one process.

Gradient convention (``all_gather_with_grad`` / ``all_gather_variable``): the backward
pass *sums* over ranks the gradients that every rank's loss sends to a rank's rows (an
all-reduce of the gradient, then the local slice). Rank ``r`` therefore
receives ``d(sum_r' L_r') / d x_r``. DDP then *averages* parameter gradients over ranks,
so the parameters get ``d(mean_r L_r) / d theta``: the gradient of the mean of the rank
losses. The contrastive losses normalise their rank loss so that this mean equals the
single-process loss on the concatenated batch (see docs/METHOD.md §2, "DDP").
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_dist() -> bool:
    """True when torch.distributed is available and a process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """Rank of this process (0 when not distributed)."""
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    """Number of ranks (1 when not distributed)."""
    return dist.get_world_size() if is_dist() else 1


class _AllGatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sums the rows' gradients over ranks.

    Written here rather than using ``torch.distributed.nn.functional.all_gather`` (now
    deprecated): the backward is an all-reduce (SUM) of the full gradient followed by the
    local slice, which every backend supports (gloo has no reduce-scatter). The tensors
    gathered by the losses are small (anchors, nodes), so the extra traffic is negligible.
    """

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:  # type: ignore[override]
        tensor = tensor.contiguous()
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor)
        ctx.rows = tensor.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = dist.get_rank() * ctx.rows
        return grad[start : start + ctx.rows]


def all_gather_with_grad(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` (same shape on every rank) over ranks along dim 0.

    Rank order is preserved (rows of rank 0 first). Gradients flow back to the local part,
    summed over the ranks' losses (see the module docstring). Returns ``tensor`` itself
    when not distributed.
    """
    if get_world_size() == 1:
        return tensor
    return _AllGatherWithGrad.apply(tensor)


def all_gather_sizes(n: int, device: torch.device) -> list[int]:
    """First-dimension sizes of every rank (``[n]`` when not distributed)."""
    world = get_world_size()
    if world == 1:
        return [n]
    size = torch.tensor([n], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


def all_gather_variable(
    tensor: Tensor, return_sizes: bool = False
) -> Tensor | tuple[Tensor, list[int]]:
    """Concatenate over ranks a tensor whose first dimension differs per rank.

    Every rank pads its tensor to the largest first dimension, the padded tensors are
    gathered (with gradient, as in :func:`all_gather_with_grad`), and the padding rows are
    dropped with a mask. The result holds the valid rows of rank 0, then rank 1, ...
    With ``return_sizes`` also returns the per-rank sizes (the local rows start at
    ``sum(sizes[:get_rank()])``). Integer tensors (labels) are gathered the same way.
    Every rank must call it, even with zero rows.
    """
    n = tensor.shape[0]
    sizes = all_gather_sizes(n, tensor.device)
    if len(sizes) == 1:
        return (tensor, sizes) if return_sizes else tensor
    max_n = max(sizes)
    if max_n > n:
        pad = tensor.new_zeros((max_n - n, *tensor.shape[1:]))
        padded = torch.cat([tensor, pad], dim=0)
    else:
        padded = tensor
    if tensor.is_floating_point() and tensor.requires_grad:
        gathered = all_gather_with_grad(padded)
    else:
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous())
        gathered = torch.cat(parts, dim=0)
    keep = torch.arange(max_n, device=tensor.device)[None, :] < torch.tensor(
        sizes, device=tensor.device
    )[:, None]
    out = gathered[keep.reshape(-1)]
    return (out, sizes) if return_sizes else out


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum of ``tensor`` over ranks, without gradient (a copy; the input is untouched)."""
    if get_world_size() == 1:
        return tensor.detach()
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out
