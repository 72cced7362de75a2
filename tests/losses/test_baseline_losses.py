"""L_cls and L_seg: known values, finiteness on degenerate inputs, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dscnet.losses.classification import multilabel_soft_margin_loss
from dscnet.losses.segmentation import segmentation_loss


def test_cls_loss_known_values() -> None:
    zero = multilabel_soft_margin_loss(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]))
    torch.testing.assert_close(zero, torch.tensor(math.log(2.0)))
    logits = torch.tensor([[2.0, -1.0]])
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0))) / 2
    torch.testing.assert_close(
        multilabel_soft_margin_loss(logits, torch.tensor([[1, 0]], dtype=torch.uint8)),
        torch.tensor(expected),
    )


def test_cls_loss_finite_on_extreme_logits_and_empty_batch() -> None:
    logits = torch.tensor([[1e4, -1e4, 0.0]], requires_grad=True)
    loss = multilabel_soft_margin_loss(logits, torch.tensor([[0.0, 1.0, 0.0]]))
    assert torch.isfinite(loss) and loss.item() > 1e3
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    empty = torch.zeros(0, 3, requires_grad=True)
    loss = multilabel_soft_margin_loss(empty, torch.zeros(0, 3))
    assert loss.item() == 0.0
    loss.backward()
    with pytest.raises(ValueError, match="must match"):
        multilabel_soft_margin_loss(torch.zeros(2, 3), torch.zeros(2, 4))


def test_seg_loss_matches_cross_entropy_after_upsampling() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 4, 5)
    labels = torch.randint(0, 4, (2, 8, 10))
    labels[0, :3] = 255
    up = F.interpolate(logits, size=(8, 10), mode="bilinear", align_corners=False)
    expected = F.cross_entropy(up, labels, ignore_index=255)
    torch.testing.assert_close(segmentation_loss(logits, labels), expected)


def test_seg_loss_uniform_logits_known_value() -> None:
    labels = torch.tensor([[[0, 1], [255, 2]]])
    loss = segmentation_loss(torch.zeros(1, 3, 2, 2), labels)
    torch.testing.assert_close(loss, torch.tensor(math.log(3.0)))


def test_seg_loss_all_ignore_is_zero_with_gradient() -> None:
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    labels = torch.full((2, 16, 16), 255, dtype=torch.long)
    loss = segmentation_loss(logits, labels)
    assert torch.isfinite(loss) and loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None and torch.all(logits.grad == 0)


def test_seg_loss_custom_ignore_index_and_bad_shapes() -> None:
    labels = torch.tensor([[[1, -1]]])
    loss = segmentation_loss(torch.zeros(1, 2, 1, 2), labels, ignore_index=-1)
    torch.testing.assert_close(loss, torch.tensor(math.log(2.0)))
    with pytest.raises(ValueError, match="labels"):
        segmentation_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 4, 1, dtype=torch.long))


def test_balanced_segmentation_loss_averages_background_and_foreground_means() -> None:
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 2, 4, requires_grad=True)
    labels = torch.tensor([[[0, 0, 0, 1], [0, 2, 255, 0]]])
    per_pixel = torch.nn.functional.cross_entropy(logits, labels, ignore_index=255, reduction="none")[0]
    bg, fg = labels[0] == 0, (labels[0] != 0) & (labels[0] != 255)
    expected = 0.5 * (per_pixel[bg].mean() + per_pixel[fg].mean())
    loss = segmentation_loss(logits, labels, balanced=True)
    torch.testing.assert_close(loss, expected)
    # Five background pixels against two foreground: the plain mean weights them 5:2.
    torch.testing.assert_close(segmentation_loss(logits, labels), per_pixel[bg | fg].mean())
    # No foreground (or no label at all): finite, still attached to the graph.
    only_bg = torch.where(labels == 0, 0, 255)
    torch.testing.assert_close(segmentation_loss(logits, only_bg, balanced=True), 0.5 * per_pixel[bg].mean())
    empty = segmentation_loss(logits, torch.full_like(labels, 255), balanced=True)
    empty.backward()
    assert empty.item() == 0.0 and torch.all(logits.grad == 0)


def test_contrastive_weights_ramp_in_after_their_start() -> None:
    from dscnet.cam.labeler import build_pseudo_labeler
    from dscnet.config import load_config
    from dscnet.losses.dscl import DSCLObjective

    cfg = load_config("synth_cpu", ["loss.contrast_start_step=10", "loss.contrast_ramp_steps=4"])
    objective = DSCLObjective(cfg, 8, build_pseudo_labeler(cfg))
    assert [objective.contrast_ramp(s) for s in (0, 9, 10, 11, 12, 13, 50)] == [0, 0, 0.25, 0.5, 0.75, 1, 1]
    cfg.loss.contrast_ramp_steps = 0
    assert DSCLObjective(cfg, 8, build_pseudo_labeler(cfg)).contrast_ramp(10) == 1.0


def test_objective_uses_the_labels_the_forward_made(tmp_path) -> None:
    from dscnet.cam.labeler import build_pseudo_labeler
    from dscnet.losses.dscl import DSCLObjective
    from dscnet.models.dscnet import build_model
    from tests.conftest import tiny_config

    torch.manual_seed(0)
    cfg = tiny_config(tmp_path, "model.node_weights=pseudo", "train.cls_warmup_steps=0", "loss.contrast_start_step=0")
    model = build_model(cfg, num_classes=3)
    objective = DSCLObjective(cfg, 3, build_pseudo_labeler(cfg))
    assert not objective.needs_labels(-1) and objective.needs_labels(0)
    images, tags = torch.randn(2, 3, 48, 48), torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    out = model(images, tags, None, objective.labeler)
    loss = objective(out, model, images, tags, step=0)
    assert torch.equal(loss.pseudo_labels, out["pseudo_labels"])
    # Labels handed in by the forward are the ones L_seg scores, not made a second time.
    forced = torch.zeros_like(out["pseudo_labels"])
    loss = objective({**out, "pseudo_labels": forced}, model, images, tags, step=0)
    assert torch.equal(loss.pseudo_labels, forced)
    torch.testing.assert_close(loss.terms["seg"], segmentation_loss(out["seg_logits"].float(), forced, balanced=objective.seg_balanced))
