"""ClassifierHead, SegmentationHead, ProjectionHead: shapes, pooling values, norms, errors."""

from __future__ import annotations

import pytest
import torch

from dscnet.errors import ConfigError
from dscnet.models.heads import ClassifierHead, ProjectionHead, SegmentationHead


def test_classifier_shapes_and_no_bias() -> None:
    head = ClassifierHead(16, 5)
    cam_logits, cls_logits = head(torch.randn(2, 16, 7, 9))
    assert cam_logits.shape == (2, 5, 7, 9) and cls_logits.shape == (2, 5)
    assert head.classifier.bias is None
    assert head.classifier.kernel_size == (1, 1)


def _identity_classifier(pooling: str) -> ClassifierHead:
    head = ClassifierHead(2, 2, pooling=pooling)
    with torch.no_grad():
        head.classifier.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
    return head


def test_gap_and_gmp_known_values() -> None:
    feats = torch.tensor([[[[1.0, 3.0], [5.0, -1.0]], [[0.0, -2.0], [-4.0, 2.0]]]])
    cam_gap, gap = _identity_classifier("gap")(feats)
    torch.testing.assert_close(cam_gap, feats)
    torch.testing.assert_close(gap, torch.tensor([[2.0, -1.0]]))
    _, gmp = _identity_classifier("gmp")(feats)
    torch.testing.assert_close(gmp, torch.tensor([[5.0, 2.0]]))


def test_gap_equals_classifying_pooled_features() -> None:
    torch.manual_seed(0)
    head = ClassifierHead(8, 3, pooling="gap")
    feats = torch.randn(2, 8, 5, 5)
    _, cls_logits = head(feats)
    pooled = head.classifier(feats.mean(dim=(-2, -1), keepdim=True)).flatten(1)
    torch.testing.assert_close(cls_logits, pooled, atol=1e-5, rtol=1e-5)


def test_unknown_pooling_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="model.pooling"):
        ClassifierHead(8, 3, pooling="avg")


def test_segmentation_head_shape_and_gradients() -> None:
    torch.manual_seed(1)
    head = SegmentationHead(24, 6, hidden=16)
    feats = torch.randn(2, 24, 10, 12, requires_grad=True)
    out = head(feats)
    assert out.shape == (2, 6, 10, 12)
    out.sum().backward()
    assert feats.grad is not None and torch.isfinite(feats.grad).all()
    head.eval()
    with torch.no_grad():
        assert torch.equal(head(feats), head(feats))  # dropout off in eval mode


def test_projection_is_unit_norm() -> None:
    torch.manual_seed(2)
    head = ProjectionHead(32, dim=8)
    z = head(torch.randn(3, 32, 5, 6))
    assert z.shape == (3, 8, 5, 6)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(3, 5, 6), atol=1e-5, rtol=0)
    assert head.net[0].out_channels == 32  # hidden defaults to in_channels
    assert ProjectionHead(32, dim=8, hidden=4).net[0].out_channels == 4


def test_heads_follow_input_dtype() -> None:
    feats = torch.randn(1, 8, 4, 4, dtype=torch.float64)
    head = ClassifierHead(8, 2).double()
    assert head(feats)[0].dtype == torch.float64
    assert SegmentationHead(8, 3, hidden=4).double()(feats).dtype == torch.float64
    assert ProjectionHead(8, 4).double()(feats).dtype == torch.float64
