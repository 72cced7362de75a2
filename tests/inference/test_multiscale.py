"""Multi-scale + flip averaging: identities, known answers, sizes, CAM normalisation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dscnet.cam.cams import cam_maps
from dscnet.inference.multiscale import segment_probs
from dscnet.utils.tta import multiscale_predict


def _images(b: int = 2, h: int = 20, w: int = 28) -> torch.Tensor:
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(0))


def _ramp_fn(x: torch.Tensor) -> torch.Tensor:
    """Not flip-equivariant: adds a left-to-right ramp to the logits."""
    ramp = torch.linspace(0, 3, x.shape[-1], dtype=x.dtype)
    return torch.cat([x[:, :1] + ramp, x[:, 1:2], -x[:, 2:3]], dim=1)


def test_single_scale_no_flip_equals_plain_softmax() -> None:
    x = _images()
    out = multiscale_predict(_ramp_fn, x, scales=(1.0,), flip=False)
    torch.testing.assert_close(out, torch.softmax(_ramp_fn(x), dim=1))


def test_flip_is_the_average_of_both_passes() -> None:
    x = _images()
    out = multiscale_predict(_ramp_fn, x, scales=(1.0,), flip=True)
    plain = torch.softmax(_ramp_fn(x), dim=1)
    flipped = torch.softmax(_ramp_fn(x.flip(-1)), dim=1).flip(-1)
    torch.testing.assert_close(out, (plain + flipped) / 2)
    assert not torch.allclose(out, plain)  # the ramp makes the flip matter


def test_flip_of_equivariant_fn_changes_nothing(colour_model) -> None:
    x = _images()
    a = segment_probs(colour_model, x, scales=(0.5, 1.0, 1.5), flip=False)
    b = segment_probs(colour_model, x, scales=(0.5, 1.0, 1.5), flip=True)
    torch.testing.assert_close(a, b)


def test_scales_of_a_pointwise_fn_on_constant_image_agree(colour_model) -> None:
    x = torch.ones(1, 3, 16, 24) * torch.tensor([1.0, -1.0, 0.5]).view(1, 3, 1, 1)
    single = segment_probs(colour_model, x)
    multi = segment_probs(colour_model, x, scales=(0.5, 0.75, 1.25))
    torch.testing.assert_close(multi, single)
    # Known answer: logits (0, R=1, G=-1) everywhere.
    torch.testing.assert_close(single[0, :, 3, 5], torch.softmax(torch.tensor([0.0, 1.0, -1.0]), 0))


def test_output_sizes_and_probabilities() -> None:
    x = _images(3, 21, 34)
    low_res = lambda t: F.avg_pool2d(t, 4, ceil_mode=True)  # noqa: E731 - logits at stride 4
    out = multiscale_predict(low_res, x, scales=(0.5, 1.0, 1.25), flip=True)
    assert out.shape == (3, 3, 21, 34)
    torch.testing.assert_close(out.sum(1), torch.ones(3, 21, 34))
    out = multiscale_predict(low_res, x, scales=(0.75,), out_size=(10, 12))
    assert out.shape == (3, 3, 10, 12)


def test_each_scale_is_run_at_its_size() -> None:
    seen = []

    def fn(t: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(t.shape))
        return t

    multiscale_predict(fn, _images(2, 20, 28), scales=(0.5, 1.0, 1.25), flip=True)
    # Flip runs in the same call on a doubled batch.
    assert seen == [(4, 3, 10, 14), (4, 3, 20, 28), (4, 3, 25, 35)]


def test_follows_input_dtype() -> None:
    x = _images().double()
    assert multiscale_predict(_ramp_fn, x, scales=(0.5, 1.0)).dtype == torch.float64


def test_size_divisor_pads_and_crops_back(colour_model) -> None:
    def needs_multiple_of_8(t: torch.Tensor) -> torch.Tensor:
        assert t.shape[-2] % 8 == 0 and t.shape[-1] % 8 == 0
        return colour_model.segment(t)

    x = _images(2, 19, 27)
    out = multiscale_predict(needs_multiple_of_8, x, scales=(1.0, 0.7), size_divisor=8)
    torch.testing.assert_close(out, segment_probs(colour_model, x, scales=(1.0, 0.7)))
    cams = cam_maps(colour_model, x, None, scales=(1.0,), size_divisor=8)
    assert cams.shape == (2, 2, 19, 27)


def test_cam_mode_is_max_normalised_and_keeps_tagged_classes(colour_model) -> None:
    x = _images(2, 24, 32)
    tags = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    cams = cam_maps(colour_model, x, tags, scales=(1.0, 0.5), flip=True)
    assert cams.shape == (2, 2, 24, 32)
    assert cams.min() >= 0
    peaks = cams.amax(dim=(-2, -1))
    torch.testing.assert_close(peaks[tags > 0], torch.ones(3), atol=1e-4, rtol=0)
    assert torch.all(cams[0, 1] == 0)  # untagged class zeroed


def test_cam_mode_averages_relu_logits_before_normalising() -> None:
    logits = torch.tensor([[[[-1.0, 2.0], [4.0, 0.5]]]])
    out = multiscale_predict(lambda t: logits.expand(t.shape[0], -1, -1, -1), torch.zeros(1, 3, 2, 2), mode="cam")
    torch.testing.assert_close(out[0, 0], torch.tensor([[0.0, 0.5], [1.0, 0.125]]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("scales", [(), (0.0,), (-1.0,)])
def test_bad_scales_are_refused(scales) -> None:
    with pytest.raises(ValueError, match="scale"):
        multiscale_predict(_ramp_fn, _images(), scales=scales)


def test_bad_mode_and_shapes_are_refused(colour_model) -> None:
    with pytest.raises(ValueError, match="mode"):
        multiscale_predict(_ramp_fn, _images(), mode="mean")
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        multiscale_predict(_ramp_fn, torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="tags must be"):
        cam_maps(colour_model, _images(2), torch.ones(2, 5))
