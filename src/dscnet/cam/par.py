"""Pixel-adaptive refinement (PAR) of CAMs, as in AFA (Ru et al., CVPR 2022).

Each pixel ``i`` is linked to 8 neighbours ``j`` at each dilation ``d`` (the 3x3 ring at
distance ``d``; replicate padding at the border). Affinities combine

- a colour term: ``k_ij = -mean_channels((|I_i - I_j| / (std_j(I) + eps) / sigma_rgb)^2)``,
  where ``std_j(I)`` is the standard deviation of the neighbours' colours around ``i``
  (per channel), softmax-normalised over the neighbours of ``i``;
- a position term: the same form on the neighbour distance ``d`` (or ``d·√2`` on the
  diagonals), softmax-normalised, weighted by ``pos_weight``.

Unlike AFA (whose weights sum to ``1 + pos_weight``, so masks grow by ~10 % over 10
iterations) the two terms are divided by ``1 + pos_weight``: each step
``masks_i <- sum_j a_ij masks_j`` is then a convex combination, which keeps every channel
inside its input range, keeps constant masks constant and keeps probabilities summing to 1.

The loops are over dilations, neighbour offsets and iterations only (48 x 10 whole-tensor
ops by default); every op is on the full ``[B, K, H, W]`` tensor. Peak extra memory is the
``[B, 8·len(dilations), H, W]`` affinity plus one padded copy of the masks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# The 8 ring offsets of a 3x3 kernel, scaled by the dilation.
_RING = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
_STD_EPS = 1e-8


def _shifted(padded: torch.Tensor, dy: int, dx: int, pad: int, h: int, w: int) -> torch.Tensor:
    """View of the neighbour at offset ``(dy, dx)`` for every pixel of a ``pad``-padded map."""
    return padded[..., pad + dy : pad + dy + h, pad + dx : pad + dx + w]


class PAR(nn.Module):
    """Pixel-adaptive refinement of masks with image colour and position affinities.

    Args:
        dilations: ring distances of the neighbours (8 neighbours each).
        num_iter: number of propagation steps.
        sigma_rgb: bandwidth of the colour term, relative to the local colour std.
        sigma_pos: bandwidth of the position term, relative to the std of the distances.
        pos_weight: weight of the position term against the colour term.

    ``forward(image, masks)``:
        image: ``[B, 3, H', W']`` (any channel count). Normalised or ``[0, 1]`` RGB both
            work and give the same result: the colour term divides each channel's
            differences by that channel's local std, so it is invariant to the per-channel
            affine map ``(x - mean) / std``. When ``(H', W')`` differs from the masks' size,
            the image is resized (bilinear, antialiased) to the mask size first.
        masks: ``[B, K, H, W]`` scores or probabilities; every channel is propagated with
            the same affinities.

        Returns ``[B, K, H, W]`` with the dtype and device of ``masks``. Computation runs in
        at least float32 (half-precision inputs are upcast) so ``eps`` cannot underflow.

    Gradients: the affinities are built from the detached image (they are constants), and
    the propagation is linear in ``masks``, so gradients flow to ``masks`` only and are
    always finite. The training loop calls it under ``torch.no_grad()``.
    """

    def __init__(
        self,
        dilations: Sequence[int] = (1, 2, 4, 8, 12, 24),
        num_iter: int = 10,
        sigma_rgb: float = 0.3,
        sigma_pos: float = 1.0,
        pos_weight: float = 0.01,
    ) -> None:
        super().__init__()
        dilations = tuple(int(d) for d in dilations)
        if not dilations or min(dilations) < 1:
            raise ValueError(f"PAR dilations must be positive integers, got {dilations}")
        if num_iter < 0 or sigma_rgb <= 0 or sigma_pos <= 0 or pos_weight < 0:
            raise ValueError(
                "PAR needs num_iter >= 0, sigma_rgb > 0, sigma_pos > 0 and pos_weight >= 0; got "
                f"{num_iter}, {sigma_rgb}, {sigma_pos}, {pos_weight}"
            )
        self.dilations = dilations
        self.num_iter = int(num_iter)
        self.sigma_rgb = float(sigma_rgb)
        self.sigma_pos = float(sigma_pos)
        self.pos_weight = float(pos_weight)
        self.offsets = [(dy * d, dx * d) for d in dilations for dy, dx in _RING]
        self.pad = max(dilations)
        dist = torch.tensor(
            [d * (math.sqrt(2.0) if dy and dx else 1.0) for d in dilations for dy, dx in _RING],
            dtype=torch.float64,
        )
        # A non-persistent buffer: follows .to(device) but stays out of checkpoints.
        self.register_buffer("distances", dist, persistent=False)

    def extra_repr(self) -> str:
        return (
            f"dilations={self.dilations}, num_iter={self.num_iter}, sigma_rgb={self.sigma_rgb}, "
            f"sigma_pos={self.sigma_pos}, pos_weight={self.pos_weight}"
        )

    def position_weights(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """Softmax-normalised position affinity of each neighbour, ``[N]``."""
        dist = self.distances.to(device=device, dtype=dtype)
        std = dist.std() if dist.numel() > 1 else dist.new_ones(())
        return torch.softmax(-((dist / (std + _STD_EPS) / self.sigma_pos) ** 2), dim=0)

    def affinity(self, image: torch.Tensor) -> torch.Tensor:
        """Convex neighbour weights ``[B, N, H, W]`` (sum to 1 over ``N``) from ``image``."""
        b, _, h, w = image.shape
        p = self.pad
        padded = F.pad(image, [p, p, p, p], mode="replicate")
        n = len(self.offsets)
        # Local colour statistics over the neighbours, two passes for a stable variance.
        mean = sum(_shifted(padded, dy, dx, p, h, w) for dy, dx in self.offsets) / n
        var = sum((_shifted(padded, dy, dx, p, h, w) - mean) ** 2 for dy, dx in self.offsets)
        std = (var / max(n - 1, 1)).sqrt()  # unbiased, as torch.std in AFA
        scale = 1.0 / ((std + _STD_EPS) * self.sigma_rgb)
        logits = image.new_empty((b, n, h, w))
        for k, (dy, dx) in enumerate(self.offsets):
            diff = (image - _shifted(padded, dy, dx, p, h, w)).abs() * scale
            logits[:, k] = -(diff**2).mean(dim=1)
        aff = torch.softmax(logits, dim=1)
        pos = self.position_weights(aff.dtype, aff.device).view(1, n, 1, 1)
        return (aff + self.pos_weight * pos) / (1.0 + self.pos_weight)

    def forward(self, image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        if image.dim() != 4 or masks.dim() != 4 or image.shape[0] != masks.shape[0]:
            raise ValueError(
                "PAR expects image [B, 3, H, W] and masks [B, K, H, W] with the same B; got "
                f"{tuple(image.shape)} and {tuple(masks.shape)}"
            )
        out_dtype = masks.dtype
        work = torch.promote_types(masks.dtype, torch.float32)
        h, w = masks.shape[-2:]
        image = image.detach().to(device=masks.device, dtype=work)
        if tuple(image.shape[-2:]) != (h, w):
            down = image.shape[-2] > h or image.shape[-1] > w
            image = F.interpolate(
                image, size=(h, w), mode="bilinear", align_corners=False, antialias=down
            )
        aff = self.affinity(image)
        masks = masks.to(work)
        p = self.pad
        for _ in range(self.num_iter):
            padded = F.pad(masks, [p, p, p, p], mode="replicate")
            out = torch.zeros_like(masks)
            for k, (dy, dx) in enumerate(self.offsets):
                out.addcmul_(aff[:, k : k + 1], _shifted(padded, dy, dx, p, h, w))
            masks = out
        return masks.to(out_dtype)
