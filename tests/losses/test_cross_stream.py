"""Cross-stream pixel-to-node term: known value, masks, invariances, gradients, empty cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dscnet.losses.cross_stream import CrossStreamContrast

TAU = 0.5


def _toy():
    """Group 0 = images 0, 1 (one pixel row each); group 1 = images 2, 3, all ignore."""
    embed = torch.zeros(4, 2, 1, 2)
    embed[0, :, 0, 0] = torch.tensor([1.0, 0.0])  # p0, class 1
    embed[0, :, 0, 1] = torch.tensor([0.0, 1.0])  # p1, class 2
    embed[1, :, 0, 0] = torch.tensor([0.6, 0.8])  # q0, class 1
    embed[2:, 0] = 1.0
    labels = torch.tensor([[[1, 2]], [[1, 255]], [[255, 255]], [[255, 255]]])
    nodes = torch.tensor([[0.8, 0.6], [0.0, 1.0], [0.6, 0.8], [1.0, 0.0]])
    node_class = torch.tensor([1, 0, 1, 1])
    node_image = torch.tensor([0, 1, 1, 2])  # the last node is in group 1: never a key of group 0
    return embed, labels, nodes, node_class, node_image


def test_hand_computed_value():
    embed, labels, nodes, node_class, node_image = _toy()
    loss_fn = CrossStreamContrast(temperature=TAU, max_anchors=None)
    loss = loss_fn(embed, labels, nodes, node_class, node_image, group_size=2)
    e = lambda s: math.exp(s / TAU)  # noqa: E731
    # p0 vs the nodes of image 1: positive (0.6, 0.8) [dot 0.6], negative bg (0, 1) [dot 0].
    l_p0 = -math.log(e(0.6) / (e(0.6) + e(0.0)))
    # q0 vs the node of image 0: its only key is the positive -> log 1 = 0.
    # p1 (class 2) has no class-2 node in image 1: skipped.
    assert loss.item() == pytest.approx((l_p0 + 0.0) / 2, rel=1e-6)
    assert loss_fn.last_stats["anchors"].item() == 3
    assert loss_fn.last_stats["valid_anchors"].item() == 2


def _clustered(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    protos = F.normalize(torch.randn(4, 16, generator=g), dim=1)
    labels = torch.randint(0, 4, (4, 6, 6), generator=g)
    embed = F.normalize(protos[labels] + 0.05 * torch.randn(4, 6, 6, 16, generator=g), dim=-1)
    node_image = torch.arange(4).repeat_interleave(4)
    node_class = torch.arange(4).repeat(4)
    nodes = protos[node_class] + 0.05 * torch.randn(16, 16, generator=g)
    return embed.permute(0, 3, 1, 2), labels, nodes, node_class, node_image


def test_clustered_lower_than_shuffled():
    embed, labels, nodes, node_class, node_image = _clustered()
    loss_fn = CrossStreamContrast(max_anchors=None)
    good = loss_fn(embed, labels, nodes, node_class, node_image, 2)
    shuffled = node_class[torch.randperm(16, generator=torch.Generator().manual_seed(1))]
    bad = loss_fn(embed, labels, nodes, shuffled, node_image, 2)
    assert good.item() < 0.5 * bad.item()


def test_invariant_to_group_permutation():
    embed, labels, nodes, node_class, node_image = _clustered(seed=3)
    nodes = torch.randn_like(nodes)
    loss_fn = CrossStreamContrast(max_anchors=None)
    ref = loss_fn(embed, labels, nodes, node_class, node_image, 2)
    perm = torch.tensor([2, 3, 0, 1])  # swap the two groups
    new_index = torch.argsort(perm)  # old image i is now at position new_index[i]
    out = loss_fn(embed[perm], labels[perm], nodes, node_class, new_index[node_image], 2)
    assert out.item() == pytest.approx(ref.item(), rel=1e-5)


def test_gradients_reach_pixels_and_nodes():
    embed, labels, nodes, node_class, node_image = _clustered(seed=4)
    embed = embed.clone().requires_grad_()
    nodes = nodes.clone().requires_grad_()
    loss = CrossStreamContrast(max_anchors=16)(embed, labels, nodes, node_class, node_image, 2)
    loss.backward()
    assert embed.grad.abs().sum() > 0 and nodes.grad.abs().sum() > 0


def test_finite_zero_cases():
    embed, labels, nodes, node_class, node_image = _toy()
    loss_fn = CrossStreamContrast()
    cases = [
        (embed, labels, nodes[:0], node_class[:0], node_image[:0], 2),  # no node
        (embed, torch.full_like(labels, 255), nodes, node_class, node_image, 2),  # no pixel
        (embed, labels, nodes, node_class, node_image, 1),  # groups of one: no other image
    ]
    for emb, lab, nod, ncls, nimg, k in cases:
        emb = emb.clone().requires_grad_()
        nod = nod.clone().requires_grad_()
        loss = loss_fn(emb, lab, nod, ncls, nimg, k)
        assert loss.item() == 0.0 and loss.requires_grad
        loss.backward()
        assert torch.isfinite(emb.grad).all() and emb.grad.abs().sum() == 0


def test_dimension_mismatch_names_the_config_keys():
    embed, labels, nodes, node_class, node_image = _toy()
    with pytest.raises(ValueError, match="model.proj_dim == model.node_dim"):
        CrossStreamContrast()(embed, labels, torch.randn(4, 3), node_class, node_image, 2)
