"""Known-answer tests for the confusion matrix and the metrics derived from it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dscnet.evaluation import ConfusionMatrix, compute_metrics

# Rows = ground truth, columns = prediction. Class 2 is only predicted (IoU 0, counted);
# class 3 appears nowhere (IoU NaN, excluded from the mean).
HAND = np.array(
    [
        [5, 1, 0, 0],
        [2, 3, 1, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
    ],
    dtype=np.int64,
)


def pixels_from_matrix(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat (pred, target) pixel arrays whose confusion matrix is exactly ``m``."""
    k = m.shape[0]
    gt, pr = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    counts = m.reshape(-1)
    return np.repeat(pr.reshape(-1), counts), np.repeat(gt.reshape(-1), counts)


def test_update_builds_the_hand_matrix_and_known_metrics() -> None:
    pred, target = pixels_from_matrix(HAND)
    cm = ConfusionMatrix(4)
    cm.update(pred, target)
    assert cm.matrix.dtype == torch.int64
    np.testing.assert_array_equal(cm.numpy(), HAND)

    r = cm.compute()
    iou = [5 / 8, 3 / 7, 0.0]
    np.testing.assert_allclose(r["iou"][:3], iou)
    assert math.isnan(r["iou"][3])
    assert r["miou"] == pytest.approx(sum(iou) / 3)
    np.testing.assert_allclose(r["precision"][:3], [5 / 7, 3 / 4, 0.0])
    assert math.isnan(r["precision"][3])
    np.testing.assert_allclose(r["recall"][:2], [5 / 6, 3 / 6])
    assert math.isnan(r["recall"][2]) and math.isnan(r["recall"][3])
    assert r["pixel_accuracy"] == pytest.approx(8 / 12)
    assert r["mean_accuracy"] == pytest.approx((5 / 6 + 3 / 6) / 2)
    assert r["fw_iou"] == pytest.approx(0.5 * 5 / 8 + 0.5 * 3 / 7)
    assert r["gt_pixels"] == [6, 6, 0, 0]
    assert r["pred_pixels"] == [7, 4, 1, 0]
    assert r["num_pixels"] == 12
    for key in ("miou", "pixel_accuracy", "mean_accuracy", "fw_iou"):
        assert type(r[key]) is float
    assert all(type(v) is float for v in r["iou"])


def test_perfect_prediction_scores_one() -> None:
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (2, 17, 13), generator=g)
    cm = ConfusionMatrix(6)
    cm.update(target.clone(), target)
    r = cm.compute()
    assert r["miou"] == 1.0 and r["pixel_accuracy"] == 1.0 and r["fw_iou"] == pytest.approx(1.0)
    assert r["iou"][:5] == [1.0] * 5 and math.isnan(r["iou"][5])


def test_all_wrong_prediction_scores_zero() -> None:
    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, 4, (3, 9, 11), generator=g)
    cm = ConfusionMatrix(4)
    cm.update((target + 1) % 4, target)
    r = cm.compute()
    assert r["miou"] == 0.0 and r["pixel_accuracy"] == 0.0 and r["mean_accuracy"] == 0.0
    assert np.trace(cm.numpy()) == 0


def test_empty_prediction_all_background() -> None:
    target = np.array([[0, 0, 1, 1], [2, 2, 2, 2]], dtype=np.uint8)
    cm = ConfusionMatrix(3)
    cm.update(np.zeros_like(target), target)
    r = cm.compute()
    assert r["iou"] == [0.25, 0.0, 0.0]
    assert r["miou"] == pytest.approx(0.25 / 3)
    assert r["precision"][0] == 0.25
    assert math.isnan(r["precision"][1]) and math.isnan(r["precision"][2])
    assert r["recall"] == [1.0, 0.0, 0.0]
    assert r["pixel_accuracy"] == 0.25


def test_no_pixels_gives_nan_not_a_crash() -> None:
    cm = ConfusionMatrix(3)
    cm.update(np.zeros((2, 2), np.int64), np.full((2, 2), 255, np.int64))
    r = cm.compute()
    assert cm.numpy().sum() == 0
    assert math.isnan(r["miou"]) and math.isnan(r["pixel_accuracy"]) and math.isnan(r["fw_iou"])


def test_ignore_pixels_are_skipped() -> None:
    target = torch.tensor([[0, 1, 255], [255, 2, 1]])
    pred = torch.tensor([[0, 1, 2], [0, 2, 0]])
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    expected = np.zeros((3, 3), np.int64)
    for t, p in [(0, 0), (1, 1), (2, 2), (1, 0)]:
        expected[t, p] += 1
    np.testing.assert_array_equal(cm.numpy(), expected)
    # A different ignore value is honoured too.
    cm2 = ConfusionMatrix(3, ignore_index=-1)
    cm2.update(torch.tensor([1, 2]), torch.tensor([-1, 2]))
    assert cm2.numpy().sum() == 1 and cm2.numpy()[2, 2] == 1


def test_bad_values_raise_clear_errors() -> None:
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"target .*outside.*: 3, 7"):
        cm.update(np.zeros(4, np.int64), np.array([0, 7, 3, 255]))
    with pytest.raises(ValueError, match=r"pred .*outside 0\.\.2: -1, 5"):
        cm.update(np.array([-1, 0, 5, 1]), np.array([0, 0, 1, 255]))
    with pytest.raises(ValueError, match="does not match target shape"):
        cm.update(torch.zeros(2, 3, 4, 4, dtype=torch.long), torch.zeros(2, 4, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="argmax"):
        cm.update(torch.zeros(2, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long))
    # Nothing was counted by the rejected updates.
    assert cm.numpy().sum() == 0


def test_batches_equal_one_big_update_and_merge_and_reset() -> None:
    g = torch.Generator().manual_seed(2)
    target = torch.randint(0, 5, (8, 10, 10), generator=g)
    target[:, :2] = 255
    pred = torch.randint(0, 5, (8, 10, 10), generator=g)
    whole = ConfusionMatrix(5)
    whole.update(pred, target)
    parts = ConfusionMatrix(5)
    for i in range(0, 8, 3):
        # Mixed numpy / torch / dtypes, as callers pass them.
        parts.update(pred[i : i + 3].numpy().astype(np.uint8), target[i : i + 3].to(torch.int32))
    np.testing.assert_array_equal(parts.numpy(), whole.numpy())

    a, b = ConfusionMatrix(5), ConfusionMatrix(5)
    a.update(pred[:4], target[:4])
    b.update(pred[4:], target[4:])
    np.testing.assert_array_equal(a.merge(b).numpy(), whole.numpy())
    with pytest.raises(ValueError, match="cannot merge"):
        a.merge(ConfusionMatrix(4))
    a.reset()
    assert a.numpy().sum() == 0 and a.matrix.shape == (5, 5)


def test_cross_check_against_boolean_masks() -> None:
    rng = np.random.default_rng(3)
    k = 6
    target = rng.integers(0, k, size=(4, 31, 29))
    target[rng.random(target.shape) < 0.1] = 255
    # Correlated prediction so IoUs are neither 0 nor 1.
    pred = np.where(
        rng.random(target.shape) < 0.6,
        np.where(target == 255, 0, target),
        rng.integers(0, k, target.shape),
    )
    cm = ConfusionMatrix(k)
    cm.update(pred, target)
    r = cm.compute()
    valid = target != 255
    for c in range(k):
        p, t = (pred == c) & valid, (target == c) & valid
        inter, union = np.logical_and(p, t).sum(), np.logical_or(p, t).sum()
        assert r["iou"][c] == pytest.approx(inter / union)
        assert r["precision"][c] == pytest.approx(inter / p.sum())
        assert r["recall"][c] == pytest.approx(inter / t.sum())
    assert r["pixel_accuracy"] == pytest.approx((pred == target)[valid].mean())


def test_compute_metrics_accepts_tensors_and_rejects_non_square() -> None:
    r = compute_metrics(torch.from_numpy(HAND))
    assert r["miou"] == pytest.approx(compute_metrics(HAND)["miou"])
    with pytest.raises(ValueError, match="square"):
        compute_metrics(np.zeros((2, 3)))


def test_all_reduce_without_process_group_is_a_noop() -> None:
    cm = ConfusionMatrix(4)
    cm.update(*pixels_from_matrix(HAND))
    cm.all_reduce()
    np.testing.assert_array_equal(cm.numpy(), HAND)


def _rank_data(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + rank)
    return torch.randint(0, 3, (50,), generator=g), torch.randint(0, 3, (50,), generator=g)


def _all_reduce_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        cm = ConfusionMatrix(3)
        cm.update(*_rank_data(rank))
        cm.all_reduce()
        np.save(f"{out_dir}/rank{rank}.npy", cm.numpy())
    finally:
        dist.destroy_process_group()


def test_all_reduce_sums_over_two_gloo_processes(tmp_path) -> None:
    mp.spawn(
        _all_reduce_worker,
        args=(2, str(tmp_path / "init"), str(tmp_path)),
        nprocs=2,
        join=True,
    )
    expected = ConfusionMatrix(3)
    for rank in range(2):
        expected.update(*_rank_data(rank))
    for rank in range(2):
        np.testing.assert_array_equal(np.load(tmp_path / f"rank{rank}.npy"), expected.numpy())


def test_miou_counts_a_class_that_is_predicted_but_absent_from_the_truth() -> None:
    """mIoU = mean IoU over classes whose union (truth or prediction) is non-empty
    (mmsegmentation's rule; docs/METHOD.md §4). AFA/ToCo's scorer averages over the classes
    present in the truth only: on this case the two differ, so the rule is pinned down."""
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 2, size=(2, 9, 11))  # classes 0 and 1 only
    pred = truth.copy()
    pred[0, :3, :4] = 2  # class 2 predicted, never in the truth
    pred[1, 5:, 6:] = 1 - pred[1, 5:, 6:]  # some plain mistakes
    truth[0, 0, 0] = 255  # ignored pixel
    cm = ConfusionMatrix(4)  # class 3: neither predicted nor in the truth
    cm.update(torch.from_numpy(pred), torch.from_numpy(truth))

    keep = truth != 255
    t, p = truth[keep], pred[keep]
    ious = {}
    for c in range(4):
        union = np.sum((t == c) | (p == c))
        if union:
            ious[c] = np.sum((t == c) & (p == c)) / union
    assert set(ious) == {0, 1, 2} and ious[2] == 0.0
    metrics = cm.compute()
    assert metrics["miou"] == pytest.approx(np.mean(list(ious.values())))
    assert np.isnan(metrics["iou"][3])
    gt_classes_only = np.mean([ious[c] for c in (0, 1)])  # AFA's rule
    assert metrics["miou"] < gt_classes_only
