"""SGCL: known values, memory use, invariances, gradients through graph and node builder."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dscnet.losses.sgcl import SemanticGraphContrast
from dscnet.models.heads.semantic_graph import SemanticGraph, class_nodes

C = 4
TAU = 0.5


def _toy():
    """Image 0: a (class 1), c (class 2), d (class 1); image 1: b (class 1)."""
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6], [0.6, 0.8]])
    return emb, torch.tensor([1, 2, 1, 1]), torch.tensor([0, 0, 0, 1])


def test_hand_computed_value_excludes_same_image_positives():
    emb, cls, img = _toy()
    loss = SemanticGraphContrast(C, temperature=TAU, memory="none", embed_dim=2)(emb, cls, img)
    e = lambda s: math.exp(s / TAU)  # noqa: E731
    a, c, d, b = emb.tolist()
    dot = lambda u, v: u[0] * v[0] + u[1] * v[1]  # noqa: E731
    # a: positive b only (d is the same image); denominator b, c, d.
    l_a = -math.log(e(dot(a, b)) / (e(dot(a, b)) + e(dot(a, c)) + e(dot(a, d))))
    l_d = -math.log(e(dot(d, b)) / (e(dot(d, b)) + e(dot(d, c)) + e(dot(d, a))))
    # b: positives a and d; denominator a, c, d.
    den_b = e(dot(b, a)) + e(dot(b, c)) + e(dot(b, d))
    l_b = -(math.log(e(dot(b, a)) / den_b) + math.log(e(dot(b, d)) / den_b)) / 2
    # c: no class-2 node in another image -> not an anchor.
    assert loss.item() == pytest.approx((l_a + l_d + l_b) / 3, rel=1e-6)


def test_input_is_normalised_inside():
    emb, cls, img = _toy()
    loss_fn = SemanticGraphContrast(C, temperature=TAU, memory="none", embed_dim=2)
    assert loss_fn(3.0 * emb, cls, img).item() == pytest.approx(loss_fn(emb, cls, img).item())


@pytest.mark.parametrize("kind", ["queue", "prototype"])
def test_memory_hand_computed(kind):
    emb, cls, img = _toy()
    loss_fn = SemanticGraphContrast(C, temperature=TAU, memory=kind, memory_size=8, embed_dim=2)
    first = loss_fn(emb, cls, img)
    none = SemanticGraphContrast(C, temperature=TAU, memory="none", embed_dim=2)(emb, cls, img)
    assert first.item() == pytest.approx(none.item())  # memory empty when the loss is computed
    # A single node of image 5: no node positive, but the memory of its class is.
    q = torch.tensor([[0.0, 1.0]])
    loss = loss_fn(q, torch.tensor([1]), torch.tensor([5]))
    if kind == "queue":
        mem = torch.cat([emb[[0, 2, 3]], emb[[1]]])  # class-major: a, d, b then c
        mem_cls = [1, 1, 1, 2]
    else:
        mem = torch.stack([F.normalize(emb[[0, 2, 3]].mean(0), dim=0), emb[1]])
        mem_cls = [1, 2]
    s = (q @ mem.T)[0] / TAU
    pos = torch.tensor(mem_cls) == 1
    expected = -(s[pos] - torch.logsumexp(s, 0)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_clustered_lower_than_shuffled():
    g = torch.Generator().manual_seed(0)
    protos = F.normalize(torch.randn(C + 1, 16, generator=g), dim=1)
    img = torch.arange(8).repeat_interleave(3)
    cls = torch.randint(0, C + 1, (24,), generator=g)
    emb = protos[cls] + 0.05 * torch.randn(24, 16, generator=g)
    loss_fn = SemanticGraphContrast(C, memory="none", embed_dim=16)
    shuffled = cls[torch.randperm(24, generator=g)]
    assert loss_fn(emb, cls, img).item() < 0.5 * loss_fn(emb, shuffled, img).item()


def test_invariant_to_node_order_and_image_ids():
    g = torch.Generator().manual_seed(1)
    emb = torch.randn(12, 8, generator=g)
    cls = torch.randint(0, C + 1, (12,), generator=g)
    img = torch.arange(6).repeat_interleave(2)
    loss_fn = SemanticGraphContrast(C, memory="none", embed_dim=8)
    perm = torch.randperm(12, generator=g)
    relabel = torch.tensor([3, 9, 0, 7, 2, 5])  # any injective renaming of images
    ref = loss_fn(emb, cls, img)
    assert loss_fn(emb[perm], cls[perm], relabel[img][perm]).item() == pytest.approx(ref.item())


def test_no_positive_cases_are_finite_zero():
    loss_fn = SemanticGraphContrast(C, memory="queue", memory_size=4, embed_dim=3)
    cases = [
        (torch.randn(3, 3), torch.tensor([1, 2, 3]), torch.tensor([0, 0, 1])),  # classes unique
        (torch.randn(1, 3), torch.tensor([1]), torch.tensor([0])),  # one node
        (torch.randn(0, 3), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)),
    ]
    for emb, cls, img in cases:
        loss_fn.memory.reset()
        emb = emb.requires_grad_()
        loss = loss_fn(emb, cls, img)
        assert loss.item() == 0.0 and loss.requires_grad
        loss.backward()
        assert torch.isfinite(emb.grad).all() and emb.grad.abs().sum() == 0


def test_gradients_through_graph_and_node_builder():
    g = torch.Generator().manual_seed(2)
    feats = torch.randn(4, 6, 5, 5, generator=g, requires_grad=True)
    cams = torch.rand(4, C, 5, 5, generator=g, requires_grad=True)
    tags = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0], [0, 1, 1, 0], [1, 0, 0, 1]]).float()
    nodes, node_class, node_image = class_nodes(feats, cams, tags, bg_node=True)
    graph = SemanticGraph(6, node_dim=8, rounds=2, heads=2)
    loss = SemanticGraphContrast(C, memory="queue", embed_dim=8)(graph(nodes), node_class, node_image)
    loss.backward()
    assert loss.item() > 0
    assert feats.grad.abs().sum() > 0
    assert cams.grad is None  # CAMs are detached: node weights are not trained by SGCL
    for name, p in graph.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_memory_not_updated_in_eval_and_options_validated():
    loss_fn = SemanticGraphContrast(C, memory="queue", memory_size=4, embed_dim=2).eval()
    emb, cls, img = _toy()
    loss_fn(emb, cls, img)
    assert loss_fn.memory.count.sum() == 0
    with pytest.raises(ValueError, match="memory must be"):
        SemanticGraphContrast(C, memory="bank")
    with pytest.raises(ValueError, match="embed_dim=2"):
        loss_fn(torch.randn(2, 5), torch.tensor([1, 1]), torch.tensor([0, 1]))
