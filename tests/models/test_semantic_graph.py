"""class_nodes (hand-computed CAM-weighted averages) and the SemanticGraph message passing."""

from __future__ import annotations

import pytest
import torch

from dscnet.models.heads.semantic_graph import SemanticGraph, class_nodes


def test_class_nodes_hand_computed():
    # One image, 2 channels, 1x2 pixels: F(x0) = (1, 10), F(x1) = (3, 30).
    feats = torch.tensor([[[[1.0, 3.0]], [[10.0, 30.0]]]])
    cams = torch.tensor([[[[1.0, 0.0]], [[0.25, 0.75]], [[0.9, 0.9]]]])  # class 3 untagged
    tags = torch.tensor([[1.0, 1.0, 0.0]])
    nodes, node_class, node_image = class_nodes(feats, cams, tags, bg_node=True, eps=0.0)
    assert node_class.tolist() == [0, 1, 2] and node_image.tolist() == [0, 0, 0]
    # bg weight = 1 - max over *tagged* cams = (1 - 1, 1 - 0.75) = (0, 0.25): node = F(x1).
    assert torch.allclose(nodes[0], torch.tensor([3.0, 30.0]))
    assert torch.allclose(nodes[1], torch.tensor([1.0, 10.0]))
    # (0.25 * F(x0) + 0.75 * F(x1)) / 1.0
    assert torch.allclose(nodes[2], torch.tensor([2.5, 25.0]))


def test_class_nodes_order_without_bg_and_untagged_images():
    feats = torch.randn(3, 4, 2, 2)
    cams = torch.rand(3, 3, 2, 2)
    tags = torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    nodes, node_class, node_image = class_nodes(feats, cams, tags, bg_node=False)
    assert node_class.tolist() == [2, 3, 1] and node_image.tolist() == [0, 0, 2]
    _, node_class, node_image = class_nodes(feats, cams, tags, bg_node=True)
    assert node_class.tolist() == [0, 2, 3, 0, 0, 1]
    assert node_image.tolist() == [0, 0, 0, 1, 2, 2]
    weights = cams[0, 1].flatten()
    expected = (feats[0].flatten(1) * weights).sum(1) / (weights.sum() + 1e-5)
    assert torch.allclose(nodes[0], expected)


def test_class_nodes_resizes_cams_and_detaches_them():
    feats = torch.randn(2, 3, 4, 4, requires_grad=True)
    cams = torch.ones(2, 2, 8, 8, requires_grad=True)
    nodes, _, _ = class_nodes(feats, cams, torch.ones(2, 2), bg_node=False)
    # Uniform CAMs: every node is the plain spatial mean.
    assert torch.allclose(nodes[0], feats[0].mean((1, 2)).detach(), atol=1e-5)
    nodes.sum().backward()
    assert feats.grad.abs().sum() > 0 and cams.grad is None


def test_graph_shapes_equivariance_and_gradients():
    torch.manual_seed(0)
    graph = SemanticGraph(6, node_dim=8, rounds=3, heads=2)
    x = torch.randn(7, 6)
    out = graph(x)
    assert out.shape == (7, 8)
    perm = torch.randperm(7)
    assert torch.allclose(graph(x[perm]), out[perm], atol=1e-5)  # dense attention: no order
    out.pow(2).sum().backward()
    assert all(p.grad is not None for p in graph.parameters())


def test_graph_messages_mix_nodes_and_mask_isolates():
    torch.manual_seed(0)
    graph = SemanticGraph(4, node_dim=8, rounds=2)
    x = torch.randn(3, 4)
    y = x.clone()
    y[1:] += 1.0
    # Without a mask, node 0 hears the others; masked to itself, it does not.
    assert not torch.allclose(graph(x)[0], graph(y)[0])
    mask = torch.ones(3, 3, dtype=torch.bool)
    mask[0] = False  # the diagonal is re-allowed inside
    assert torch.allclose(graph(x, mask)[0], graph(y, mask)[0], atol=1e-6)
    # Zero rounds: only the node MLP g_s.
    plain = SemanticGraph(4, node_dim=8, rounds=0)
    assert torch.allclose(plain(x), plain.g_s(x))


def test_graph_handles_zero_and_one_node():
    graph = SemanticGraph(5, node_dim=4)
    assert graph(torch.zeros(0, 5)).shape == (0, 4)
    assert torch.isfinite(graph(torch.randn(1, 5))).all()


def test_graph_validates_arguments():
    with pytest.raises(ValueError, match="not divisible by heads"):
        SemanticGraph(4, node_dim=6, heads=4)
    with pytest.raises(ValueError, match=r"attn_mask must be \[2, 2\]"):
        SemanticGraph(4, node_dim=4)(torch.randn(2, 4), torch.ones(3, 3, dtype=torch.bool))


def test_nodes_never_pool_crop_padding_when_valid_is_given() -> None:
    # A crop whose right half is padding: features 1 on the image, 9 on the padding.
    features = torch.ones(1, 2, 4, 4)
    features[..., 2:] = 9.0
    cams = torch.zeros(1, 1, 4, 4)
    cams[..., 0, 0] = 1.0  # the object covers one real cell
    tags = torch.ones(1, 1)
    valid = torch.ones(1, 8, 8, dtype=torch.bool)
    valid[..., 4:] = False  # the input is 8x8, the feature grid 4x4
    mixed, _, _ = class_nodes(features, cams, tags)
    clean, node_class, _ = class_nodes(features, cams, tags, valid=valid)
    assert node_class.tolist() == [0, 1]
    assert mixed[0, 0] > 4.0  # without valid, the background node is mostly padding
    torch.testing.assert_close(clean[0], torch.ones(2), rtol=0, atol=1e-4)  # real pixels only
    torch.testing.assert_close(clean[1], mixed[1])  # the object node had no padding anyway


def test_label_shares_count_each_cells_pixels_and_skip_ignored() -> None:
    from dscnet.models.heads.semantic_graph import label_shares

    # A 2x4 label map pooled to a 1x2 grid: each cell holds 2x2 pixels.
    labels = torch.tensor([[[0, 1, 2, 2], [1, 255, 2, 2]]])
    shares = label_shares(labels, num_classes=2, size=(1, 2), ignore_index=255)
    assert shares.shape == (1, 3, 1, 2)
    # Left cell: bg 1/4, class 1 2/4, one ignored pixel (counts for no class); right: all class 2.
    torch.testing.assert_close(shares[0, :, 0, 0], torch.tensor([0.25, 0.5, 0.0]))
    torch.testing.assert_close(shares[0, :, 0, 1], torch.tensor([0.0, 0.0, 1.0]))


def test_class_nodes_take_the_given_background_map() -> None:
    feats = torch.tensor([[[[1.0, 3.0]], [[10.0, 30.0]]]])
    cams = torch.tensor([[[[1.0, 0.0]]]])  # 1 - max M_c would give the bg node F(x1)
    bg = torch.tensor([[[[1.0, 0.0]]]])  # a background map that says x0 instead
    nodes, node_class, _ = class_nodes(feats, cams, torch.ones(1, 1), eps=0.0, bg_weights=bg)
    assert node_class.tolist() == [0, 1]
    torch.testing.assert_close(nodes[0], torch.tensor([1.0, 10.0]))
    torch.testing.assert_close(nodes[1], torch.tensor([1.0, 10.0]))


def test_pseudo_node_weights_pool_the_labelers_regions(tmp_path) -> None:
    from dscnet.cam.labeler import build_pseudo_labeler
    from dscnet.models.dscnet import build_model
    from dscnet.models.heads.semantic_graph import label_shares
    from tests.conftest import tiny_config

    torch.manual_seed(0)
    cfg = tiny_config(tmp_path, "model.node_weights=pseudo")
    model = build_model(cfg, num_classes=3).eval()
    labeler = build_pseudo_labeler(cfg)
    images = torch.randn(2, 3, 48, 48)
    tags = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    valid = torch.ones(2, 48, 48, dtype=torch.bool)
    valid[1, :, 24:] = False  # the second crop is half padding
    with torch.no_grad():
        out = model(images, tags, valid, labeler)
        expected = labeler(images, tags, cam_logits=out["cam_logits"], model=model)
    labels = out["pseudo_labels"]
    # The labeler's own labels, crop padding set to ignore.
    assert torch.equal(labels[0], expected[0])
    assert torch.equal(labels[1, :, :24], expected[1, :, :24]) and bool((labels[1, :, 24:] == 255).all())
    # Without a labeler (B's warm-up steps) the nodes fall back to the CAMs and no labels are made.
    with torch.no_grad():
        plain = model(images, tags, valid)
    assert "pseudo_labels" not in plain
    assert plain["node_class"].tolist() == out["node_class"].tolist()
    # The graph's input nodes: features pooled over the labels' shares (not the CAMs).
    seen = []
    model.graph.register_forward_hook(lambda mod, args, res: seen.append(args[0]))
    with torch.no_grad():
        model(images, tags, valid, labeler)
        feats = model._levels(images)[-1].float()
    shares = label_shares(labels, 3, tuple(feats.shape[-2:]))
    for row, (image, cls) in enumerate(zip(out["node_image"].tolist(), out["node_class"].tolist())):
        weights = shares[image, cls]
        if cls > 0 and weights.sum() == 0:
            continue  # no confident pixel: the CAM fallback
        expected_node = (feats[image].flatten(1) * weights.flatten()).sum(1) / (weights.sum() + 1e-5)
        torch.testing.assert_close(seen[0][row], expected_node, rtol=1e-4, atol=1e-5)
