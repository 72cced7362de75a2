"""Background-threshold sweep: known answers on a CAM that is a horizontal ramp."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dscnet.config import load_config
from dscnet.engine.evaluate import evaluate
from dscnet.engine.threshold_sweep import sweep_bg_threshold, with_threshold
from dscnet.errors import ConfigError

WIDTH = 10  # ramp columns 0, 1/9, ..., 1: the mask's object is the columns above 0.5 (5..9)


class RampCAM(nn.Module):
    """One class whose CAM logit is the image's first channel."""

    num_classes = 1

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()))  # evaluate() reads the device from it

    def cam(self, images: torch.Tensor) -> torch.Tensor:
        return images[:, :1]


def ramp_dataset(n: int = 3) -> list[dict]:
    ramp = torch.linspace(0.0, 1.0, WIDTH).expand(4, WIDTH)
    mask = (ramp > 0.5).long()
    image = torch.stack([ramp, torch.zeros_like(ramp), torch.zeros_like(ramp)])
    return [{"image": image, "mask": mask, "tags": torch.ones(1), "index": i, "id": str(i)} for i in range(n)]


def ramp_config():
    return load_config("synth_cpu", ["cam.par.enabled=false", "cam.par.scale=1.0", "data.num_workers=0", "eval.batch_size=2"])


def test_band_moves_with_the_threshold():
    cfg = with_threshold(ramp_config(), 0.3, 0.05)
    assert (cfg.cam.bg_threshold, cfg.cam.low, cfg.cam.high) == pytest.approx((0.3, 0.25, 0.35))


def test_sweep_scores_a_ramp_with_known_ious():
    rows = sweep_bg_threshold(RampCAM(), ramp_dataset(), ramp_config(), [0.5, 0.3, 0.7], band=0.0)
    assert [r["bg_threshold"] for r in rows] == [0.5, 0.3, 0.7]
    # 0.5: exactly the object's columns 5..9.
    assert rows[0]["miou"] == pytest.approx(1.0)
    # 0.3: columns 3..9 -> object IoU 5/7, background IoU 3/5.
    assert rows[1]["miou"] == pytest.approx((5 / 7 + 3 / 5) / 2)
    # 0.7: columns 7..9 -> object 3/5, background 5/7.
    assert rows[2]["miou"] == pytest.approx((3 / 5 + 5 / 7) / 2)
    assert all(r["coverage"] == pytest.approx(1.0) for r in rows)  # no band: every pixel decided


def test_band_pixels_count_as_background_and_leave_coverage():
    (row,) = sweep_bg_threshold(RampCAM(), ramp_dataset(), ramp_config(), [0.5], band=0.2)
    # band (0.3, 0.7): columns 3..6 are uncertain (background in miou), 7..9 the object.
    assert row["coverage"] == pytest.approx(6 / 10)
    assert row["miou"] == pytest.approx((3 / 5 + 5 / 7) / 2)
    assert row["confident_miou"] == pytest.approx(1.0)  # the confident columns 0..2, 7..9 are right


def test_sweep_matches_evaluate_with_the_same_settings():
    cfg = ramp_config()
    (row,) = sweep_bg_threshold(RampCAM(), ramp_dataset(), cfg, [0.35], band=0.1)
    direct = evaluate(RampCAM(), ramp_dataset(), with_threshold(cfg, 0.35, 0.1), what="pseudo")
    assert row["miou"] == pytest.approx(direct.metrics["miou"])
    cam_row = sweep_bg_threshold(RampCAM(), ramp_dataset(), cfg, [0.5], what="cam")[0]
    assert cam_row["miou"] == pytest.approx(1.0) and "coverage" not in cam_row


def test_one_pass_sweep_matches_evaluate_with_par_at_half_size():
    # PAR and the half-size refinement run once per batch in the sweep, per threshold in evaluate.
    cfg = load_config("synth_cpu", ["cam.par.num_iter=3", "cam.par.dilations=[1,2]", "data.num_workers=0", "eval.batch_size=2"])
    data = [dict(d, image=d["image"].repeat_interleave(2, 1).repeat_interleave(2, 2) + 0.1 * i,
                 mask=d["mask"].repeat_interleave(2, 0).repeat_interleave(2, 1)) for i, d in enumerate(ramp_dataset())]
    rows = sweep_bg_threshold(RampCAM(), data, cfg, [0.3, 0.45, 0.6], band=0.1)
    for row in rows:
        direct = evaluate(RampCAM(), data, with_threshold(cfg, row["bg_threshold"], 0.1), what="pseudo").metrics
        assert (row["miou"], row["confident_miou"], row["coverage"]) == pytest.approx(
            (direct["miou"], direct["confident_miou"], direct["coverage"])
        )
    assert len({round(r["miou"], 6) for r in rows}) == 3  # the thresholds do differ


def test_sweep_rejects_bad_requests():
    with pytest.raises(ConfigError, match="no background threshold"):
        sweep_bg_threshold(RampCAM(), ramp_dataset(), ramp_config(), [])
    with pytest.raises(ConfigError, match="unknown sweep mode 'seg'"):
        sweep_bg_threshold(RampCAM(), ramp_dataset(), ramp_config(), [0.4], what="seg")


def test_ms_sweep_scores_what_the_ms_export_writes(tmp_path):
    # `dscnet threshold --ms` and `dscnet pseudo --ms` run one rule: at every candidate the
    # sweep's score is the export's, so a threshold chosen on B is the one the export applies.
    from dscnet.cam.labeler import build_export_labeler
    from dscnet.inference.pseudo_export import export_pseudo_labels

    cfg = load_config("synth_cpu", ["cam.par.num_iter=3", "cam.par.dilations=[1,2]", "data.num_workers=0",
                                    "eval.batch_size=2", "cam.export_scales=[1.0,0.5]", "cam.export_flip=true"])
    data = [dict(d, image=d["image"].repeat_interleave(2, 1).repeat_interleave(2, 2) + 0.1 * i,
                 mask=d["mask"].repeat_interleave(2, 0).repeat_interleave(2, 1)) for i, d in enumerate(ramp_dataset())]
    rows = sweep_bg_threshold(RampCAM(), data, cfg, [0.3, 0.6], band=0.1, labeler=build_export_labeler(cfg, ms=True))
    for row in rows:
        exported = export_pseudo_labels(RampCAM(), data, tmp_path / str(row["bg_threshold"]),
                                        with_threshold(cfg, row["bg_threshold"], 0.1), ms=True, progress=False)
        assert (row["miou"], row["coverage"]) == pytest.approx((exported["miou"], exported["coverage"]))
    labeler = build_export_labeler(cfg, ms=True)
    assert (labeler.cam_scales, labeler.cam_flip, labeler.scale) == ((1.0, 0.5), True, cfg.cam.par.scale)


def test_crf_sweep_with_an_identity_crf_is_the_rule():
    # A CRF that changes nothing gives the thresholds' labels back, band included.
    from dscnet.cam.labeler import build_export_labeler

    cfg = ramp_config()
    identity = lambda rgb, probs: probs  # noqa: E731
    for band in (0.0, 0.2):
        rule = sweep_bg_threshold(RampCAM(), ramp_dataset(), cfg, [0.3, 0.5], band=band)
        crf = sweep_bg_threshold(RampCAM(), ramp_dataset(), cfg, [0.3, 0.5], band=band,
                                 labeler=build_export_labeler(cfg), crf=identity)
        assert [(r["miou"], r["coverage"]) for r in crf] == pytest.approx([(r["miou"], r["coverage"]) for r in rule])
