"""The VOC/COCO configs are set for a GPU run; the CPU configs stay reproducible."""

from __future__ import annotations

import pytest

from dscnet.config import load_config

GPU_CONFIGS = ("voc_vit", "voc_resnet", "coco_vit", "coco_resnet")


@pytest.mark.parametrize("name", GPU_CONFIGS)
def test_gpu_configs_use_fast_kernels(name):
    assert load_config(name).experiment.deterministic is False


@pytest.mark.parametrize("name", ["synth_cpu", "photos_cpu", "base"])
def test_cpu_configs_stay_deterministic(name):
    assert load_config(name).experiment.deterministic is True


def test_vit_thresholds_are_tocos():
    voc, coco = load_config("voc_vit").cam, load_config("coco_vit").cam
    assert (voc.bg_threshold, voc.low, voc.high) == (0.5, 0.25, 0.7)
    assert (coco.bg_threshold, coco.low, coco.high) == (0.45, 0.25, 0.65)
    for name in ("voc_resnet", "coco_resnet"):  # not a ViT: not ToCo's numbers
        cam = load_config(name).cam
        assert (cam.bg_threshold, cam.low, cam.high) == (0.45, 0.35, 0.55)


@pytest.mark.parametrize("name", ["coco_vit", "coco_resnet"])
def test_coco_scores_cams_on_val_and_evaluates_a_fixed_subset_periodically(name):
    ev = load_config(name).eval
    assert ev.cam_split is None  # not the 82k train images
    assert ev.val_subset == 5000 and ev.val_subset_seed is None


def test_voc_scores_cams_on_train_and_periodic_evaluations_on_all_of_val():
    ev = load_config("voc_vit").eval
    assert ev.cam_split == "train" and ev.val_subset is None
