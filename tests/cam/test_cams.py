"""cams_from_logits: normalisation, tags, resizing."""

from __future__ import annotations

import pytest
import torch

from dscnet.cam import cams_from_logits


def test_max_is_one_for_tagged_classes_and_untagged_are_zero() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 6, 7) * 3
    tags = torch.tensor([[1, 0, 1, 0], [0, 1, 1, 1]], dtype=torch.float32)
    cams = cams_from_logits(logits, tags)
    assert cams.shape == (2, 4, 6, 7)
    peaks = cams.amax(dim=(-2, -1))
    torch.testing.assert_close(peaks[tags > 0], torch.ones(5), atol=1e-4, rtol=0)
    assert torch.all(cams[tags == 0] == 0)
    assert cams.min() >= 0 and cams.max() <= 1


def test_known_values_relu_then_max_normalisation() -> None:
    logits = torch.tensor([[[[-1.0, 0.0], [2.0, 4.0]]]])
    cams = cams_from_logits(logits, torch.ones(1, 1))
    torch.testing.assert_close(cams, torch.tensor([[[[0.0, 0.0], [0.5, 1.0]]]]), atol=1e-5, rtol=0)


def test_all_nonpositive_logits_stay_zero() -> None:
    logits = torch.cat([torch.zeros(1, 1, 5, 5), -torch.rand(1, 1, 5, 5)], dim=1)
    cams = cams_from_logits(logits, torch.ones(1, 2))
    assert torch.isfinite(cams).all()
    assert torch.all(cams == 0)


def test_upsample_to_size_and_none_tags_keep_all() -> None:
    torch.manual_seed(1)
    logits = torch.randn(3, 2, 4, 4).abs() + 0.1
    cams = cams_from_logits(logits, None, size=(16, 12))
    assert cams.shape == (3, 2, 16, 12)
    torch.testing.assert_close(cams.amax(dim=(-2, -1)), torch.ones(3, 2), atol=1e-4, rtol=0)


def test_dtype_and_gradient_follow_input() -> None:
    logits = torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    cams = cams_from_logits(logits, torch.ones(1, 2, dtype=torch.uint8))
    assert cams.dtype == torch.float64
    cams.sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_bad_tags_shape_raises() -> None:
    with pytest.raises(ValueError, match="tags"):
        cams_from_logits(torch.zeros(2, 3, 4, 4), torch.ones(2, 4))
