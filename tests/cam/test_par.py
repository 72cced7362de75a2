"""PAR: edge-aware sharpening, convexity, constants, invariances, shapes and gradients."""

from __future__ import annotations

import pytest
import torch

from dscnet.cam import PAR

H, W = 24, 48


def _edge_image() -> torch.Tensor:
    """Left half black, right half white."""
    img = torch.zeros(1, 3, H, W)
    img[..., W // 2 :] = 1.0
    return img


def _blurred_step() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.arange(W, dtype=torch.float32)
    step = (x >= W // 2).float().expand(1, 1, H, W)
    blurred = torch.sigmoid((x - W / 2 + 0.5) / 3.0).expand(1, 1, H, W).clone()
    return blurred, step


def test_par_sharpens_a_blurred_cam_along_a_colour_edge() -> None:
    blurred, step = _blurred_step()
    out = PAR()(_edge_image(), blurred)
    before = (blurred - step).abs().mean()
    after = (out - step).abs().mean()
    assert after < 0.8 * before
    # The jump across the edge grows from ~0.08 to nearly the full step.
    jump_before = blurred[0, 0, 0, W // 2] - blurred[0, 0, 0, W // 2 - 1]
    jump_after = out[0, 0, 0, W // 2] - out[0, 0, 0, W // 2 - 1]
    assert jump_before < 0.1
    assert jump_after > 0.8


def test_without_a_colour_edge_par_blurs_instead() -> None:
    # Control: on a flat image the same CAM is diffused, so the colour term is what sharpens.
    blurred, step = _blurred_step()
    out = PAR()(torch.zeros(1, 3, H, W), blurred)
    assert (out - step).abs().mean() > (blurred - step).abs().mean()


def test_constant_mask_is_preserved() -> None:
    torch.manual_seed(0)
    masks = torch.full((2, 3, H, W), 0.3)
    out = PAR()(torch.rand(2, 3, H, W), masks)
    torch.testing.assert_close(out, masks, atol=1e-5, rtol=0)


def test_output_is_a_convex_combination() -> None:
    torch.manual_seed(1)
    masks = torch.rand(2, 4, H, W)
    out = PAR()(torch.randn(2, 3, H, W), masks)
    lo = masks.amin(dim=(-2, -1), keepdim=True)
    hi = masks.amax(dim=(-2, -1), keepdim=True)
    assert torch.all(out >= lo - 1e-6) and torch.all(out <= hi + 1e-6)
    # Same weights for every channel: probabilities still sum to 1.
    probs = torch.softmax(torch.randn(2, 4, H, W), dim=1)
    torch.testing.assert_close(
        PAR()(torch.randn(2, 3, H, W), probs).sum(1), torch.ones(2, H, W), atol=1e-5, rtol=0
    )


def test_affinity_rows_sum_to_one() -> None:
    aff = PAR(dilations=(1, 3)).affinity(torch.rand(2, 3, 10, 11))
    assert aff.shape == (2, 16, 10, 11)
    torch.testing.assert_close(aff.sum(1), torch.ones(2, 10, 11), atol=1e-5, rtol=0)
    assert torch.all(aff >= 0)


def test_invariant_to_per_channel_normalisation() -> None:
    torch.manual_seed(2)
    rgb = torch.rand(1, 3, H, W)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    masks = torch.rand(1, 2, H, W)
    par = PAR()
    torch.testing.assert_close(par(rgb, masks), par((rgb - mean) / std, masks), atol=1e-4, rtol=0)


def test_image_is_resized_to_the_mask_size() -> None:
    big = _edge_image().repeat_interleave(4, dim=-1).repeat_interleave(4, dim=-2)
    blurred, step = _blurred_step()
    out = PAR()(big, blurred)
    assert out.shape == blurred.shape
    assert (out - step).abs().mean() < 0.8 * (blurred - step).abs().mean()


def test_shape_dtype_and_zero_iterations() -> None:
    masks = torch.rand(2, 5, 9, 13, dtype=torch.float64)
    out = PAR()(torch.rand(2, 3, 9, 13), masks)
    assert out.shape == masks.shape and out.dtype == torch.float64
    half = PAR()(torch.rand(1, 3, 9, 13), torch.rand(1, 2, 9, 13).to(torch.bfloat16))
    assert half.dtype == torch.bfloat16 and torch.isfinite(half.float()).all()
    assert torch.equal(PAR(num_iter=0)(torch.rand(2, 3, 9, 13), masks), masks)


def test_gradients_flow_to_masks_and_are_finite() -> None:
    torch.manual_seed(3)
    masks = torch.rand(1, 2, 12, 12, requires_grad=True)
    image = torch.zeros(1, 3, 12, 12, requires_grad=True)  # flat: std = 0 everywhere
    out = PAR(num_iter=3)(image, masks)
    out.square().sum().backward()
    assert masks.grad is not None and torch.isfinite(masks.grad).all()
    assert masks.grad.abs().sum() > 0
    assert image.grad is None  # affinities are constants


def test_shape_mismatch_and_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="same B"):
        PAR()(torch.rand(2, 3, 8, 8), torch.rand(1, 2, 8, 8))
    with pytest.raises(ValueError, match="dilations"):
        PAR(dilations=(0, 1))
