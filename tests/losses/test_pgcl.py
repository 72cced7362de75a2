"""PGCL: known values, invariances, gradients, empty cases, anchor cap, memory."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import dscnet.losses.pgcl as pgcl_mod
from dscnet.losses.pgcl import PixelGroupContrast, resize_labels, sample_group_anchors

C = 3


def clustered(labels: torch.Tensor, dim: int = 16, noise: float = 0.05, seed: int = 0):
    """Embeddings ``[B, dim, h, w]`` that sit near one random direction per label."""
    g = torch.Generator().manual_seed(seed)
    protos = F.normalize(torch.randn(C + 2, dim, generator=g), dim=1)
    lab = labels.clamp(max=C + 1)  # ignore (255) pixels get their own direction
    z = protos[lab] + noise * torch.randn(*lab.shape, dim, generator=g)
    return F.normalize(z, dim=-1).permute(0, 3, 1, 2).contiguous()


def block_labels(b: int = 4, h: int = 6, w: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lab = torch.randint(0, C + 1, (b, h, w), generator=g)
    lab[:, 0, :2] = 255
    return lab


def test_three_anchor_supcon_hand_computed():
    a, b, c = (1.0, 0.0), (0.6, 0.8), (0.0, 1.0)
    embed = torch.tensor([a, b, c]).T.reshape(1, 2, 1, 3)
    labels = torch.tensor([[[1, 1, 2]]])
    tau = 0.5
    loss = PixelGroupContrast(C, temperature=tau, max_anchors=None, memory_size=0, embed_dim=2)(
        embed, labels, group_size=1
    )
    ab, ac, bc = 0.6, 0.0, 0.8
    l_a = -math.log(math.exp(ab / tau) / (math.exp(ab / tau) + math.exp(ac / tau)))
    l_b = -math.log(math.exp(ab / tau) / (math.exp(ab / tau) + math.exp(bc / tau)))
    # c has no positive: it is a negative for a and b but not an anchor of the mean.
    assert loss.item() == pytest.approx((l_a + l_b) / 2, rel=1e-6)


def test_memory_keys_hand_computed_on_second_call():
    a, b, c = (1.0, 0.0), (0.6, 0.8), (0.0, 1.0)
    embed = torch.tensor([a, b, c]).T.reshape(1, 2, 1, 3)
    labels = torch.tensor([[[1, 1, 2]]])
    tau = 0.5
    loss_fn = PixelGroupContrast(C, temperature=tau, max_anchors=None, memory_size=4, embed_dim=2)
    loss_fn(embed, labels, group_size=1)
    assert loss_fn.memory.count.tolist() == [0, 2, 1, 0]
    loss = loss_fn(embed, labels, group_size=1)
    e = {k: math.exp(v / tau) for k, v in {"aa": 1.0, "ab": 0.6, "ac": 0.0, "bb": 1.0, "bc": 0.8,
                                            "cc": 1.0}.items()}
    # Anchor a: keys b, c (batch) + a, b, c (memory); positives b, a(mem), b(mem).
    den_a = e["ab"] + e["ac"] + e["aa"] + e["ab"] + e["ac"]
    l_a = -(math.log(e["ab"] / den_a) * 2 + math.log(e["aa"] / den_a)) / 3
    den_b = e["ab"] + e["bc"] + e["ab"] + e["bb"] + e["bc"]
    l_b = -(math.log(e["ab"] / den_b) * 2 + math.log(e["bb"] / den_b)) / 3
    # Anchor c now has a positive: its own past copy in the memory.
    den_c = e["ac"] + e["bc"] + e["ac"] + e["bc"] + e["cc"]
    l_c = -math.log(e["cc"] / den_c)
    assert loss.item() == pytest.approx((l_a + l_b + l_c) / 3, rel=1e-6)


def test_clustered_lower_than_shuffled():
    labels = block_labels(b=4, h=8, w=8)
    embed = clustered(labels)
    perm = torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(1))
    shuffled = labels.reshape(-1)[perm].reshape(labels.shape)
    loss_fn = PixelGroupContrast(C, max_anchors=None, memory_size=0, embed_dim=16)
    good = loss_fn(embed, labels, group_size=2)
    bad = loss_fn(embed, shuffled, group_size=2)
    assert good.item() < 0.5 * bad.item()


@pytest.mark.parametrize("perm", [[2, 3, 0, 1, 4, 5], [1, 0, 3, 2, 5, 4]])
def test_invariant_to_group_and_in_group_permutation(perm):
    labels = block_labels(b=6)
    embed = F.normalize(torch.randn(6, 8, 6, 6, generator=torch.Generator().manual_seed(3)), dim=1)
    loss_fn = PixelGroupContrast(C, max_anchors=None, memory_size=0, embed_dim=8)
    ref = loss_fn(embed, labels, group_size=2)
    out = loss_fn(embed[perm], labels[perm], group_size=2)
    assert out.item() == pytest.approx(ref.item(), rel=1e-5)


def test_group_membership_matters():
    # Moving an image to another group changes the loss (the check above is not vacuous).
    labels = block_labels(b=4)
    embed = F.normalize(torch.randn(4, 8, 6, 6, generator=torch.Generator().manual_seed(3)), dim=1)
    loss_fn = PixelGroupContrast(C, max_anchors=None, memory_size=0, embed_dim=8)
    perm = [0, 2, 1, 3]
    assert loss_fn(embed, labels, 2).item() != pytest.approx(
        loss_fn(embed[perm], labels[perm], 2).item(), rel=1e-4
    )


def test_gradient_reaches_embeddings_through_projection():
    labels = block_labels(b=2)
    feats = torch.randn(2, 5, 6, 6, requires_grad=True)
    proj = torch.nn.Conv2d(5, 8, 1)
    embed = F.normalize(proj(feats), dim=1)
    loss = PixelGroupContrast(C, memory_size=8, embed_dim=8)(embed, labels, group_size=2)
    loss.backward()
    assert feats.grad.abs().sum() > 0 and proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "labels",
    [
        torch.full((2, 4, 4), 255),  # no confident pixel
        torch.cat([torch.ones(1, 1, 1), torch.full((1, 1, 3), 255)], dim=2).expand(2, 1, 4),
        torch.tensor([[[1, 2, 3, 0]]]),  # one image, every class once: no positive
    ],
    ids=["no-confident", "only-key-is-the-positive", "no-positive"],
)
def test_finite_zero_when_no_positive(labels):
    b, h, w = labels.shape
    embed = F.normalize(torch.randn(b, 4, h, w), dim=1).requires_grad_()
    loss_fn = PixelGroupContrast(C, memory_size=4, embed_dim=4)
    loss = loss_fn(embed, labels, group_size=b)
    assert torch.isfinite(loss) and loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.isfinite(embed.grad).all() and embed.grad.abs().sum() == 0


def test_single_class_one_image_is_finite():
    labels = torch.ones(1, 3, 3, dtype=torch.long)
    loss_fn = PixelGroupContrast(C, memory_size=0, embed_dim=4)
    # Identical embeddings, every key a positive: loss = log(n_keys) = log 8 exactly.
    same = F.normalize(torch.ones(1, 4, 3, 3), dim=1)
    assert loss_fn(same, labels, group_size=1).item() == pytest.approx(math.log(8), rel=1e-6)
    embed = F.normalize(torch.randn(1, 4, 3, 3), dim=1).requires_grad_()
    loss = loss_fn(embed, labels, group_size=1)
    assert loss.item() > math.log(8)  # lse - mean(s) > log n when the sims differ
    loss.backward()
    assert torch.isfinite(embed.grad).all() and embed.grad.abs().sum() > 0


def test_pseudo_labels_resized_by_nearest():
    low = block_labels(b=2, h=4, w=4)
    high = low.repeat_interleave(4, dim=1).repeat_interleave(4, dim=2)
    assert torch.equal(resize_labels(high, (4, 4)), low)
    embed = F.normalize(torch.randn(2, 4, 4, 4), dim=1)
    loss_fn = PixelGroupContrast(C, max_anchors=None, memory_size=0, embed_dim=4)
    assert loss_fn(embed, high, 2).item() == pytest.approx(loss_fn(embed, low, 2).item())


def test_sampler_is_class_balanced_and_capped():
    g = torch.Generator().manual_seed(0)
    labels = torch.full((2, 100), 255)
    labels[0, :60] = 0
    labels[0, 60:63] = 1  # a small class: all 3 pixels kept
    labels[0, 63:90] = 2
    labels[1, :50] = 3
    index, mask = sample_group_anchors(labels, C + 1, max_anchors=12, generator=g)
    chosen0 = labels[0, index[0][mask[0]]]
    assert torch.bincount(chosen0, minlength=4).tolist() == [4, 3, 4, 0]  # quota 12 // 3
    assert len(set(index[0][mask[0]].tolist())) == int(mask[0].sum())
    assert (labels[1, index[1][mask[1]]] == 3).all() and int(mask[1].sum()) == 12
    # More classes present than anchors: the cap still holds.
    index, mask = sample_group_anchors(labels, C + 1, max_anchors=2, generator=g)
    assert mask.sum(1).tolist() == [2, 2]
    # Group 0 (3 classes, cap 2): one pixel each of the lowest class ids.
    assert sorted(labels[0, index[0][mask[0]]].tolist()) == [0, 1]
    # No cap: every confident pixel.
    index, mask = sample_group_anchors(labels, C + 1, max_anchors=None, generator=g)
    assert mask.sum(1).tolist() == [90, 50]


def test_anchor_cap_bounds_the_similarity_matrix(monkeypatch):
    shapes = []
    real = pgcl_mod.supcon_per_anchor

    def spy(sim, pos, key_mask, bank_sim=None, *rest):
        shapes.append((tuple(sim.shape), tuple(bank_sim.shape)))
        return real(sim, pos, key_mask, bank_sim, *rest)

    monkeypatch.setattr(pgcl_mod, "supcon_per_anchor", spy)
    labels = block_labels(b=4, h=16, w=16)
    embed = F.normalize(torch.randn(4, 4, 16, 16), dim=1)
    loss_fn = PixelGroupContrast(C, max_anchors=20, memory_size=3, embed_dim=4)
    loss_fn(embed, labels, group_size=2)
    loss_fn(embed, labels, group_size=2)
    # In-group [G, A, A] with A <= max_anchors, and [G, A, M] to the memory (4 classes x 3).
    assert shapes == [((2, 20, 20), (2, 20, 0)), ((2, 20, 20), (2, 20, 12))]
    assert loss_fn.last_stats["anchors"].item() == 40  # 20 // 4 classes = 5 each, 2 groups


def test_sampling_follows_the_generator():
    labels = block_labels(b=2, h=16, w=16)
    embed = F.normalize(torch.randn(2, 4, 16, 16), dim=1)
    loss_fn = PixelGroupContrast(C, max_anchors=8, memory_size=0, embed_dim=4)
    run = [loss_fn(embed, labels, 2, torch.Generator().manual_seed(s)).item() for s in (5, 5, 6)]
    assert run[0] == run[1] and run[0] != run[2]


def test_memory_updated_after_loss_and_only_in_training():
    labels = block_labels(b=2)
    embed = F.normalize(torch.randn(2, 4, 6, 6), dim=1)
    with_mem = PixelGroupContrast(C, max_anchors=None, memory_size=50, embed_dim=4)
    without = PixelGroupContrast(C, max_anchors=None, memory_size=0, embed_dim=4)
    assert with_mem(embed, labels, 2).item() == pytest.approx(without(embed, labels, 2).item())
    confident = labels[labels != 255]
    assert with_mem.memory.count.tolist() == torch.bincount(confident, minlength=C + 1).tolist()
    with_mem.eval()
    with_mem(embed, labels, 2)
    assert with_mem.memory.count.tolist() == torch.bincount(confident, minlength=C + 1).tolist()


def test_bad_shapes_raise():
    loss_fn = PixelGroupContrast(C, embed_dim=4)
    with pytest.raises(ValueError, match="whole number of groups"):
        loss_fn(torch.zeros(3, 4, 2, 2), torch.zeros(3, 2, 2, dtype=torch.long), group_size=2)
    with pytest.raises(ValueError, match="embed_dim=4"):
        loss_fn(torch.zeros(2, 8, 2, 2), torch.zeros(2, 2, 2, dtype=torch.long), group_size=2)
