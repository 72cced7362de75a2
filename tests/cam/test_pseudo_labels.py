"""make_pseudo_labels: thresholds, uncertain band, tags, PAR refinement, errors."""

from __future__ import annotations

import pytest
import torch

from dscnet.cam import PAR, make_pseudo_labels
from dscnet.errors import ConfigError


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
    with pytest.raises(ValueError, match="image"):
        make_pseudo_labels(cams, tags, par=PAR())
    with pytest.raises(ValueError, match="tags"):
        make_pseudo_labels(cams, torch.ones(1, 3))
