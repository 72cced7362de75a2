"""PseudoLabeler: thresholds, uncertain band, tags, PAR refinement, scale, upsampling, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dscnet.cam import PAR, PseudoLabeler, Thresholds
from dscnet.errors import ConfigError


def make_pseudo_labels(
    cams: torch.Tensor,
    tags: torch.Tensor,
    bg_threshold: float = 0.45,
    low: float | None = 0.35,
    high: float | None = 0.55,
    ignore_index: int = 255,
    par: PAR | None = None,
    image: torch.Tensor | None = None,
) -> torch.Tensor:
    """Labels of given CAMs at their own size: the labeler's refine + decide stages."""
    labeler = PseudoLabeler(Thresholds(bg_threshold, low, high), par, ignore_index=ignore_index)
    return labeler.decide(*labeler.refine(cams, tags, image))


def _row(values_c1: list[float], values_c2: list[float]) -> torch.Tensor:
    """cams [1, 2, 1, W] from two per-pixel value lists."""
    return torch.tensor([[values_c1, values_c2]]).unsqueeze(2)


def test_thresholds_and_band_known_answers() -> None:
    # class 1 scores per pixel; class 2 scores low except the last pixel.
    cams = _row([0.9, 0.2, 0.45, 0.36, 0.54, 0.56, 0.34, 0.3], [0.0] * 7 + [0.7])
    tags = torch.tensor([[1.0, 1.0]])
    labels = make_pseudo_labels(cams, tags)
    assert labels.dtype == torch.long and labels.shape == (1, 1, 8)
    assert labels[0, 0].tolist() == [1, 0, 255, 255, 255, 1, 0, 2]


def test_band_off_uses_the_background_threshold_only() -> None:
    cams = _row([0.9, 0.2, 0.45, 0.46, 0.4], [0.0] * 5)
    tags = torch.tensor([[1.0, 0.0]])
    labels = make_pseudo_labels(cams, tags, bg_threshold=0.45, low=None, high=None)
    # 0.45 ties with the background score: background wins the tie.
    assert labels[0, 0].tolist() == [1, 0, 0, 1, 0]
    same = make_pseudo_labels(cams, tags, bg_threshold=0.45, low=0.45, high=0.45)
    assert torch.equal(labels, same)


def test_custom_ignore_index_and_band() -> None:
    cams = _row([0.5, 0.65, 0.75], [0.0] * 3)
    labels = make_pseudo_labels(
        cams, torch.tensor([[1.0, 0.0]]), bg_threshold=0.6, low=0.55, high=0.7, ignore_index=-1
    )
    assert labels[0, 0].tolist() == [0, -1, 1]


def test_untagged_class_never_appears() -> None:
    torch.manual_seed(0)
    cams = torch.rand(2, 4, 6, 6) * 0.3
    cams[:, 2] = 1.0  # class 3 is maximal everywhere ...
    tags = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]])  # ... but never tagged
    labels = make_pseudo_labels(cams, tags)
    assert not torch.any(labels == 3)
    assert set(labels[0].unique().tolist()) <= {0, 1, 4, 255}
    assert set(labels[1].unique().tolist()) <= {0, 2, 255}


def test_image_without_tags_is_all_background() -> None:
    cams = torch.ones(2, 3, 4, 4)
    tags = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    labels = make_pseudo_labels(cams, tags)
    assert torch.all(labels[0] == 0)
    assert torch.all(labels[1] == 2)
    assert torch.all(make_pseudo_labels(cams, torch.zeros(2, 3)) == 0)


def test_highest_tagged_class_wins() -> None:
    cams = torch.zeros(1, 3, 2, 2)
    cams[0, 0] = 0.6
    cams[0, 2] = torch.tensor([[0.9, 0.1], [0.7, 0.2]])
    labels = make_pseudo_labels(cams, torch.tensor([[1.0, 0.0, 1.0]]))
    assert labels[0].tolist() == [[3, 1], [3, 1]]


def test_par_refinement_fixes_labels_along_a_colour_edge() -> None:
    # Object = right half of the image (white), CAM a blurred step that leaks to the left.
    h, w = 16, 40
    image = torch.zeros(1, 3, h, w)
    image[..., w // 2 :] = 1.0
    x = torch.arange(w, dtype=torch.float32)
    cam = torch.sigmoid((x - w / 2 + 0.5) / 4.0).expand(1, 1, h, w)
    cams = torch.cat([cam, torch.zeros(1, 1, h, w)], dim=1)
    tags = torch.tensor([[1.0, 0.0]])
    truth = (x >= w // 2).long().expand(1, h, w)

    plain = make_pseudo_labels(cams, tags)
    refined = make_pseudo_labels(cams, tags, par=PAR(), image=image)
    assert torch.any(plain == 255)  # the blur leaves an uncertain band ...
    assert not torch.any(refined == 255)  # ... that PAR resolves ...
    assert torch.equal(refined, truth)  # ... into the true edge


def test_par_refinement_keeps_untagged_classes_out() -> None:
    torch.manual_seed(1)
    cams = torch.rand(2, 3, 12, 12)
    cams[:, 1] = 1.0
    tags = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    labels = make_pseudo_labels(cams, tags, par=PAR(num_iter=2), image=torch.rand(2, 3, 24, 24))
    assert labels.shape == (2, 12, 12)
    assert not torch.any(labels == 2)
    assert not torch.any(labels[1] == 3)


def test_errors() -> None:
    cams, tags = torch.rand(1, 2, 4, 4), torch.ones(1, 2)
    with pytest.raises(ConfigError, match=r"cam\.low"):
        make_pseudo_labels(cams, tags, low=0.6, high=0.5)
    with pytest.raises(ConfigError, match=r"cam\.bg_threshold"):
        make_pseudo_labels(cams, tags, bg_threshold=1.5)
    with pytest.raises(ValueError, match="images"):
        make_pseudo_labels(cams, tags, par=PAR())
    with pytest.raises(ValueError, match="tags"):
        make_pseudo_labels(cams, torch.ones(1, 3))


class _FixedCAM(torch.nn.Module):
    """``cam(images)`` returns fixed CAM logits (any batch size), at their own resolution."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def cam(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(images.shape[0], -1, -1, -1)


def test_thresholds_around_clips_and_validates() -> None:
    t = Thresholds.around(0.4, 0.1)
    assert (t.bg, t.low, t.high) == (0.4, pytest.approx(0.3), pytest.approx(0.5))
    t = Thresholds.around(0.05, 0.1)
    assert (t.bg, t.low, t.high) == (0.05, 0.0, pytest.approx(0.15))
    assert not Thresholds.around(0.4, 0.0).has_band
    with pytest.raises(ConfigError, match="outside"):
        Thresholds.around(1.2, 0.1)
    with pytest.raises(ConfigError, match="band"):
        Thresholds.around(0.4, -0.1)


def test_working_scale_and_nearest_resize_equal_deciding_first() -> None:
    # A 4x4 CAM-logit ramp; the labeler works at half of an 8x8 input and resizes to 8x8.
    logits = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4) / 15
    images = torch.zeros(1, 3, 8, 8)
    tags = torch.ones(1, 1)
    labeler = PseudoLabeler(Thresholds(0.5, 0.4, 0.6), scale=0.5)
    labels = labeler(images, tags, cam_logits=logits)
    assert labels.shape == (1, 8, 8)
    at_work = labeler.decide(*labeler.refine(labeler.cams(images, tags, cam_logits=logits), tags))
    up = torch.nn.functional.interpolate(at_work[:, None].float(), size=(8, 8), mode="nearest")
    assert torch.equal(labels, up[:, 0].long())
    # Known answers on the 4x4 grid: CAM k/15 / (1 + eps) -> bg <= 0.4 < ignore < 0.6 <= class.
    cam = [k / 15 / (1 + 1e-5) for k in range(16)]
    expected = torch.tensor([0 if v <= 0.4 else 255 if v < 0.6 else 1 for v in cam])
    assert at_work.flatten().tolist() == expected.tolist()


def test_bilinear_upsampling_resizes_scores_before_the_decision() -> None:
    # Two pixels, 0 and 1: nearest gives a hard half/half split; bilinear interpolates the
    # scores, so the middle columns fall in the band and the border moves to the 0.5 crossing.
    logits = torch.tensor([[[[0.0, 1.0]]]])
    images = torch.zeros(1, 3, 1, 8)
    tags = torch.ones(1, 1)
    nearest = PseudoLabeler(Thresholds(0.5, 0.4, 0.6))(images, tags, cam_logits=logits, size=(1, 8))
    assert nearest[0, 0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    labeler = PseudoLabeler(Thresholds(0.5, 0.3, 0.7), upsample="bilinear")
    top, _ = labeler.refine(labeler.cams(images, tags, cam_logits=logits), tags, size=(1, 8))
    expected = torch.nn.functional.interpolate(torch.tensor([[[[0.0, 1.0]]]]), size=(1, 8), mode="bilinear")
    torch.testing.assert_close(top, expected[:, 0] / (1 + 1e-5))
    assert labeler.decide(top, torch.ones_like(top, dtype=torch.long))[0, 0].tolist() == [0, 0, 0, 255, 255, 1, 1, 1]


def test_multiscale_cams_come_from_the_model_and_single_scale_reuses_logits() -> None:
    torch.manual_seed(0)
    logits = torch.randn(1, 2, 6, 6)
    images, tags = torch.zeros(2, 3, 12, 12), torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    model = _FixedCAM(logits)
    single = PseudoLabeler(Thresholds(0.3))
    # One scale: the given logits and a pass of the model give the same labels, to the bit.
    assert torch.equal(single(images, tags, cam_logits=logits.expand(2, -1, -1, -1)), single(images, tags, model=model))
    multi = single.variant(cam_scales=(1.0, 0.5), cam_flip=True)
    with pytest.raises(ValueError, match="need the model"):
        multi(images, tags, cam_logits=logits.expand(2, -1, -1, -1))
    assert multi(images, tags, model=model).shape == (2, 12, 12)


def test_variant_switches_refinement_and_band_off() -> None:
    labeler = PseudoLabeler(Thresholds(0.45, 0.35, 0.55), PAR(num_iter=1), scale=0.5)
    plain = labeler.variant(refine=False, band=False, scale=1.0)
    assert plain.par is None and not plain.thresholds.has_band and plain.scale == 1.0
    assert labeler.par is not None and labeler.thresholds.has_band  # the original is untouched


def test_bad_settings_name_their_key() -> None:
    with pytest.raises(ConfigError, match="cam.upsample"):
        PseudoLabeler(Thresholds(0.5), upsample="cubic")
    with pytest.raises(ConfigError, match="cam.online_scales"):
        PseudoLabeler(Thresholds(0.5), cam_scales=(1.0, 0.0))
    with pytest.raises(ConfigError, match="cam.par.scale"):
        PseudoLabeler(Thresholds(0.5), scale=0.0)


def test_crf_labels_with_an_identity_crf_follow_the_threshold_rule() -> None:
    # A CRF that changes nothing: its argmax is the plain rule (band: two CRF passes agree on
    # confident pixels and disagree inside the band). Random scores never tie a threshold.
    torch.manual_seed(0)
    logits = torch.rand(2, 3, 9, 11)  # positive: the CAMs are these over their maximum
    tags = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])  # the second image has no tag
    images = torch.zeros(2, 3, 9, 11)
    seen = []

    def identity(rgb, probs):
        seen.append((rgb.dtype, rgb.shape, probs.shape))
        np.testing.assert_allclose(probs.sum(0), 1.0, rtol=1e-5)
        return probs

    for thresholds in (Thresholds(0.4, 0.3, 0.5), Thresholds(0.4)):
        labeler = PseudoLabeler(thresholds)
        expected = labeler(images, tags, cam_logits=logits)
        got = labeler.crf_labels(images, tags, identity, cam_logits=logits)
        assert torch.equal(got, expected)
        assert bool((got[1] == 0).all())
    # Image 1 has no tag and no CRF run; image 0 has 2 tags + background = 3 channels.
    assert seen[0] == (np.uint8, (9, 11, 3), (3, 9, 11)) and len(seen) == 3


def test_a_dense_crf_snaps_noisy_labels_to_a_colour_edge() -> None:
    pytest.importorskip("pydensecrf")
    from functools import partial

    from dscnet.inference.crf import dense_crf

    # Left half black, right half white; the CAM leaks 6 px into the black half.
    h, w = 20, 40
    images = torch.full((1, 3, h, w), -2.0)
    images[..., w // 2 :] = 2.0
    cams = torch.zeros(1, 1, h, w)
    cams[..., w // 2 - 6 :] = 0.9
    labeler = PseudoLabeler(Thresholds(0.4), mean=(0.5,) * 3, std=(0.25,) * 3)
    plain = labeler.decide(*labeler.refine(cams, torch.ones(1, 1)))
    crf = partial(dense_crf, iterations=10, bi_xy_std=20, bi_rgb_std=10, bi_weight=10, pos_weight=3)
    logits = torch.logit(cams.clamp(1e-4, 1 - 1e-4))
    refined = labeler.crf_labels(images, torch.ones(1, 1), crf, cam_logits=logits)
    truth = torch.zeros(1, h, w, dtype=torch.long)
    truth[..., w // 2 :] = 1
    assert (plain != truth).sum() == 6 * h
    assert (refined != truth).sum() < (plain != truth).sum() // 3
