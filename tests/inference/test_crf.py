"""Dense CRF: cleans a noisy map on a two-colour image; missing extra; worker pool."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from dscnet.errors import MissingExtraError
from dscnet.inference.crf import CrfParams, CrfPool, crf_map, dense_crf


def _two_colour_case(seed: int = 0, h: int = 40, w: int = 48):
    """Left half dark, right half bright; probabilities right on average but 25 % flipped."""
    rng = np.random.default_rng(seed)
    image = np.zeros((h, w, 3), dtype=np.uint8)
    image[:, w // 2 :] = (230, 220, 210)
    truth = np.zeros((h, w), dtype=np.int64)
    truth[:, w // 2 :] = 1
    p_true = np.where(rng.random((h, w)) < 0.25, 0.35, 0.7)  # noisy pixels favour the wrong class
    p1 = np.where(truth == 1, p_true, 1 - p_true)
    probs = np.stack([1 - p1, p1]).astype(np.float32)
    return image, probs, truth


def test_crf_removes_most_noise_on_a_two_colour_image() -> None:
    image, probs, truth = _two_colour_case()
    wrong_before = int((probs.argmax(0) != truth).sum())
    refined = dense_crf(image, probs)
    wrong_after = int((refined.argmax(0) != truth).sum())
    assert wrong_before > 300
    assert wrong_after < wrong_before // 10
    assert refined.shape == probs.shape and refined.dtype == np.float32
    np.testing.assert_allclose(refined.sum(0), 1.0, atol=1e-4)


def test_zero_iterations_keep_the_unary_decision() -> None:
    image, probs, _ = _two_colour_case(seed=1)
    refined = dense_crf(image, probs, iterations=0)
    np.testing.assert_array_equal(refined.argmax(0), probs.argmax(0))


def test_shapes_are_checked() -> None:
    image, probs, _ = _two_colour_case()
    with pytest.raises(ValueError, match="probs must be"):
        dense_crf(image, probs[:, :-1])
    with pytest.raises(ValueError, match="uint8"):
        dense_crf(image.astype(np.float32), probs)


def test_missing_extra_gives_a_clear_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    image, probs, _ = _two_colour_case()
    with pytest.raises(MissingExtraError, match=r"pip install 'dscnet\[crf\]'") as info:
        dense_crf(image, probs)
    assert info.value.module == "pydensecrf2" and info.value.extra == "crf"
    with pytest.raises(MissingExtraError):
        CrfPool(workers=1)


def test_params_from_config_like_mappings() -> None:
    assert CrfParams.from_any({"iterations": 3, "bi_rgb_std": 7}) == CrfParams(iterations=3, bi_rgb_std=7)
    assert CrfParams.from_any(None) == CrfParams()
    with pytest.raises(ValueError, match="unknown CRF parameter"):
        CrfParams.from_any({"iters": 3})


def test_worker_processes_match_the_serial_result() -> None:
    cases = [_two_colour_case(seed=s, h=24, w=32) for s in range(3)]
    images = [c[0] for c in cases]
    probs = [c[1] for c in cases]
    params = {"iterations": 5}
    serial = crf_map(images, probs, params, workers=1)
    parallel = crf_map(images, probs, params, workers=2)
    for a, b in zip(serial, parallel):
        np.testing.assert_allclose(a, b, atol=1e-6)
    with CrfPool(params, workers=1) as pool:
        labels = pool.map(images, probs, labels=True)
    for lab, ref, (_, _, truth) in zip(labels, serial, cases):
        assert lab.dtype == np.uint8
        np.testing.assert_array_equal(lab, ref.argmax(0))
        assert (lab != truth).mean() < 0.05


def test_read_only_inputs_are_accepted() -> None:
    image, probs, truth = _two_colour_case()
    image.setflags(write=False)
    probs.setflags(write=False)
    assert (dense_crf(image, probs, iterations=2).argmax(0) != truth).mean() < 0.05
