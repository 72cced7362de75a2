"""A score does not depend on the evaluation batch, and `eval` agrees with `predict`.

Real photographs come in several sizes (VOC: 500x375 and 375x500 and more). Padding them into
one batch changed predictions near the borders; the loader now batches only images of equal
size. Checked on a VOC-layout folder of mixed-size images, for every mode and with multi-scale.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from dscnet.cli.main import main
from dscnet.data.build import build_dataset
from dscnet.engine.checkpoint import save_checkpoint
from dscnet.engine.evaluate import evaluate
from dscnet.inference.predict import predict_from_checkpoint
from dscnet.models.dscnet import build_model
from tests.conftest import tiny_config

SIZES = [(33, 47), (47, 33), (40, 40), (33, 47), (40, 40), (47, 33), (29, 52)]
CLASSES = ["background", "disc", "bar"]


def _write_voc(root) -> None:
    rng = np.random.default_rng(0)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    ids = []
    for n, (h, w) in enumerate(SIZES):
        # Smooth colour noise (bilinear upsampling of a coarse grid), saved losslessly.
        coarse = rng.uniform(0, 255, size=(4, 5, 3)).astype(np.uint8)
        image = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BILINEAR))
        mask = np.zeros((h, w), dtype=np.uint8)
        mask[h // 4 : h // 2, w // 4 : w // 2] = 1 + n % 2
        mask[h // 2 :, w // 2 :] = 2 - n % 2
        mask[0, :] = 255  # an ignored border row
        Image.fromarray(image).save(root / "JPEGImages" / f"im{n}.png")
        Image.fromarray(mask, mode="L").save(root / "SegmentationClass" / f"im{n}.png")
        ids.append(f"im{n}")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids) + "\n")


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed_voc")
    _write_voc(root)
    return root


def _model(cfg):
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=len(CLASSES) - 1).eval()
    # Sharp random heads, so that an untrained model predicts every class somewhere.
    for head in (model.seg_head, model.classifier):
        last = [m for m in head.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        torch.nn.init.normal_(last.weight, std=3.0)
    return model


def _cfg(tmp_path, voc, *overrides):
    # The from-scratch small CNN has no stride constraint: every size runs as it is.
    return tiny_config(
        tmp_path, "data.type=voc", f"data.root={voc}", "data.val_split=val", "cam.bg_threshold=0.3",
        "cam.low=0.2", "cam.high=0.4", "eval.ms_scales=[0.75,1.0]", *overrides,
    )  # fmt: skip


@pytest.mark.parametrize("what", ["seg", "cam", "pseudo"])
@pytest.mark.parametrize("ms", [False, True], ids=["single", "ms+flip"])
def test_confusion_does_not_depend_on_the_batch(tmp_path, voc, what, ms) -> None:
    matrices = []
    for batch_size in (1, 3, len(SIZES)):
        cfg = _cfg(tmp_path, voc, f"eval.batch_size={batch_size}")
        dataset = build_dataset(cfg, "val", train=False)
        scales = tuple(cfg.eval.ms_scales) if ms else (1.0,)
        result = evaluate(_model(cfg), dataset, cfg, what=what, scales=scales, flip=ms)
        matrices.append(result.confusion.matrix)
    assert int((matrices[0].sum(0) > 0).sum()) >= 2  # predictions are not one class
    for other in matrices[1:]:
        assert torch.equal(other, matrices[0])


def test_eval_and_predict_agree_pixel_for_pixel(tmp_path, voc) -> None:
    cfg = _cfg(tmp_path, voc, "eval.batch_size=4")
    model = _model(cfg)
    ckpt = save_checkpoint(tmp_path / "m.pth", model=model.state_dict(), config=cfg, class_names=CLASSES)

    predicted: dict[str, np.ndarray] = {}
    dataset = build_dataset(cfg, "val", train=False)
    evaluate(model, dataset, cfg, on_batch=lambda ids, pred: predicted.update(zip(ids, pred.numpy())))
    summary = predict_from_checkpoint(
        ckpt, [voc / "JPEGImages"], tmp_path / "pred", device="cpu", save_overlay=False, progress=False
    )
    assert summary.ok == len(SIZES) and len(predicted) == len(SIZES)
    confusion = np.zeros((3, 3), dtype=np.int64)
    for n in range(len(SIZES)):
        mask = np.array(Image.open(tmp_path / "pred" / f"im{n}.png"))
        np.testing.assert_array_equal(mask, predicted[f"im{n}"])
        truth = np.array(Image.open(voc / "SegmentationClass" / f"im{n}.png")).astype(np.int64)
        keep = truth != 255
        np.add.at(confusion, (truth[keep], mask[keep].astype(np.int64)), 1)

    # `dscnet eval` (the CLI) writes the same confusion matrix as predict's masks give.
    assert main(["eval", "--checkpoint", str(ckpt), "--out", str(tmp_path / "ev"), "--device", "cpu"]) == 0
    written = json.loads((tmp_path / "ev" / "seg_raw" / "metrics.json").read_text())
    np.testing.assert_array_equal(np.array(written["confusion"]), confusion)
