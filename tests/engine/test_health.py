"""Training health (issue 17): each condition made to happen, its message, and its channels.

The monitor's decisions are checked on constructed tensors with known answers; tiny training
runs then make each condition happen for real and check the console, ``scalars.jsonl``, the
HTML report, the end-of-training summary and ``dscnet eval``; a healthy tiny run warns of
nothing.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dscnet.cli.main import main
from dscnet.config import load_config
from dscnet.engine.distributed import init_distributed
from dscnet.engine.health import HealthConfig, TrainingHealth, constant_predictor_loss
from dscnet.engine.trainer import Trainer
from dscnet.errors import ConfigError
from dscnet.evaluation.confusion import compute_metrics
from dscnet.evaluation.health import append_warnings, background_message, read_warnings
from dscnet.losses.dscl import LossOutput
from tests.conftest import TINY_OVERRIDES, tiny_config

WEIGHTS = {"cls": 1.0, "seg": 1.0, "pgcl": 0.1, "sgcl": 0.1, "cross": 0.05}
# 4 images, 3 classes: p = (3/4, 1/4, 2/4).
TAGS = torch.tensor([[1, 0, 1], [1, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float32)


def _monitor(*overrides: str, weights: dict[str, float] | None = None) -> TrainingHealth:
    cfg = load_config("synth_cpu", ["train.health.window=4", "train.health.warmup_steps=0", *overrides])
    return TrainingHealth(cfg, weights or WEIGHTS, ignore_index=255)


def _feed(
    health: TrainingHealth,
    steps: range,
    logits: torch.Tensor,
    labels: torch.Tensor | None = None,
    seg_logits: torch.Tensor | None = None,
    terms: dict[str, float] | None = None,
    valid: torch.Tensor | None = None,
) -> None:
    cls = F.multilabel_soft_margin_loss(logits, TAGS)
    loss_terms = {"cls": cls, **{k: torch.tensor(v) for k, v in (terms or {}).items()}}
    out = {"cls_logits": logits}
    if seg_logits is not None:
        out["seg_logits"] = seg_logits
    for step in steps:
        health.update(step, out, TAGS, LossOutput(cls, loss_terms, labels), valid)


def _constant_logits() -> torch.Tensor:
    p = TAGS.mean(0).clamp(1e-3, 1 - 1e-3)
    return torch.logit(p).expand(4, 3).clone()


def _learned_logits() -> torch.Tensor:
    return TAGS * 10 - 5  # +5 on every tag, -5 elsewhere


def _conditions(health: TrainingHealth) -> list[str]:
    return [w.condition for w in health.warnings]


# --------------------------------------------------------------------------- known answers
def test_constant_predictor_loss_is_the_mean_binary_entropy_and_the_best_constant():
    p = torch.tensor([0.75, 0.25, 0.5])
    entropy = -(p * p.log() + (1 - p) * (1 - p).log())
    assert constant_predictor_loss(TAGS).item() == pytest.approx(entropy.mean().item(), abs=1e-6)
    # logit(p_c) for every image reaches that loss; any other constant does worse.
    best = F.multilabel_soft_margin_loss(torch.logit(p).expand(4, 3), TAGS)
    assert best.item() == pytest.approx(constant_predictor_loss(TAGS).item(), abs=1e-6)
    for shift in (-0.5, 0.3):
        assert F.multilabel_soft_margin_loss(torch.logit(p).expand(4, 3) + shift, TAGS) > best
    # a class on every image (or on none) costs nothing
    assert constant_predictor_loss(torch.ones(5, 2)).item() == 0.0
    with pytest.raises(ValueError, match="non-empty"):
        constant_predictor_loss(torch.zeros(0, 3))


def test_config_keys_are_checked_and_warmup_defaults_to_the_cls_warmup():
    cfg = load_config("synth_cpu")
    assert HealthConfig.from_config(cfg).warmup_steps == int(cfg.train.cls_warmup_steps) == 300
    assert HealthConfig.from_config(load_config("synth_cpu", ["train.health.warmup_steps=7"])).warmup_steps == 7
    # Ranges are the schema's: refused when the config is loaded.
    with pytest.raises(ConfigError, match="train.health.window=0: must be >= 1"):
        load_config("synth_cpu", ["train.health.window=0"])
    with pytest.raises(ConfigError, match="train.health.min_f1=2.0: must be <= 1"):
        load_config("synth_cpu", ["train.health.min_f1=2"])
    with pytest.raises(ConfigError, match="train.health.dominance_ratio=0.0: must be > 0"):
        load_config("synth_cpu", ["train.health.dominance_ratio=0"])
    assert TrainingHealth.for_objective(load_config("synth_cpu", ["train.health.enabled=false"]), None) is None


def test_classifier_at_the_constant_level_warns_twice_after_the_warmup_only():
    health = _monitor("train.health.warmup_steps=4")
    _feed(health, range(0, 4), _constant_logits())
    values, new = health.report(4)
    assert new == [] and "health/cls_loss" not in values  # window 1-4 lies in the warm-up
    _feed(health, range(4, 6), _constant_logits())
    assert health.report(6) == ({}, [])  # window not complete yet
    _feed(health, range(6, 8), _constant_logits())
    values, new = health.report(8)
    assert values["health/cls_loss"] == pytest.approx(values["health/cls_constant"], rel=1e-4)
    # only class 0 (p = 3/4) has a positive logit: 3 of its 4 predictions right, of 6 tags
    assert values["health/cls_f1"] == pytest.approx(2 * 3 / (4 + 6))
    assert [w.condition for w in new] == ["cls_constant"]
    msg = new[0].message
    assert "has not come down from the constant predictor's level" in msg and "steps 5-8" in msg and "ratio 1.00" in msg
    assert "real_cpu" in msg and "optim.lr (now 0.001)" in msg and "train.cls_warmup_steps (now 300)" in msg
    # logits below 0 everywhere: F1 0, the tags are never predicted
    _feed(health, range(8, 12), torch.full((4, 3), -3.0))
    _, new = health.report(12)
    assert [w.condition for w in new] == ["cls_f1"]
    assert "F1 on the training batches is 0.000" in new[0].message and "0 of 24 tags found, 0 predicted" in new[0].message
    assert _conditions(health) == ["cls_constant", "cls_f1"]  # cls_constant warned only once


def test_a_learned_classifier_and_sane_labels_warn_of_nothing():
    health = _monitor()
    labels = torch.zeros(4, 8, 8, dtype=torch.long)
    labels[:, :4] = 1  # half foreground
    labels[:, 4, :] = 255
    seg = torch.zeros(4, 4, 8, 8)
    seg[:, 1, :4] = 5.0
    for start in (0, 4, 8):
        _feed(health, range(start, start + 4), _learned_logits(), labels, seg, {"seg": 0.4, "pgcl": 3.0})
        values, new = health.report(start + 4)
        assert new == []
    assert values["health/cls_f1"] == 1.0
    assert values["health/pseudo_fg_share"] == pytest.approx(0.5) and values["health/pseudo_ignore_share"] == pytest.approx(1 / 8)
    assert values["health/seg_fg_share"] == pytest.approx(0.5)
    assert health.warnings == [] and health.summary() == []


def test_pseudo_labels_all_background_or_all_ignore():
    health = _monitor()
    _feed(health, range(4), _learned_logits(), torch.zeros(4, 8, 8, dtype=torch.long))
    _, new = health.report(4)
    assert [w.condition for w in new] == ["pseudo_background"]
    assert "100.0% background, 0.0% ignore, 0.00% foreground" in new[0].message
    assert "cam.bg_threshold (now 0.4" in new[0].message and "dscnet threshold" in new[0].message

    health = _monitor()
    _feed(health, range(4), _learned_logits(), torch.full((4, 8, 8), 255, dtype=torch.long))
    _, new = health.report(4)
    assert [w.condition for w in new] == ["pseudo_ignore"]
    assert "all ignore" in new[0].message and "cam.low / cam.high (now 0.3 / 0.5)" in new[0].message

    # ignore on crop padding (valid False) is not counted
    health = _monitor()
    labels = torch.full((4, 8, 8), 255, dtype=torch.long)
    labels[:, :, :2] = 1
    valid = torch.zeros(4, 8, 8, dtype=torch.bool)
    valid[:, :, :2] = True
    _feed(health, range(4), _learned_logits(), labels, valid=valid)
    values, new = health.report(4)
    assert new == [] and values["health/pseudo_fg_share"] == 1.0


def test_segmentation_all_background_after_one_window_of_l_seg():
    health = _monitor()
    seg = torch.zeros(4, 4, 8, 8)
    seg[:, 0] = 3.0  # background wins everywhere
    labels = torch.ones(4, 8, 8, dtype=torch.long)
    _feed(health, range(0, 4), _learned_logits(), labels, seg, {"seg": 0.5})
    assert health.report(4)[1] == []  # the first window of L_seg is a grace window
    _feed(health, range(4, 8), _learned_logits(), labels, seg, {"seg": 0.5})
    values, new = health.report(8)
    assert values["health/seg_fg_share"] == 0.0
    assert [w.condition for w in new] == ["seg_background"]
    assert "0.00% foreground over steps 5-8" in new[0].message and "4 steps after L_seg switched on" in new[0].message


def test_a_dominating_loss_term_is_named_with_its_weight():
    health = _monitor("loss.pgcl.weight=1000", weights={**WEIGHTS, "pgcl": 1000.0})
    _feed(health, range(4), _learned_logits(), terms={"seg": 0.2, "pgcl": 2.0})
    values, new = health.report(4)
    assert [w.condition for w in new] == ["loss_dominance"]
    cls = F.multilabel_soft_margin_loss(_learned_logits(), TAGS).item()
    assert values["health/max_term_ratio"] == pytest.approx(2000.0 / (0.2 + cls), rel=1e-5)
    assert "'pgcl' dominates the total by 4.0 orders of magnitude" in new[0].message
    assert "loss.pgcl.weight (now 1000" in new[0].message


def test_summary_says_whether_a_condition_still_held_at_the_last_check():
    health = _monitor()
    _feed(health, range(4), torch.full((4, 3), -3.0))
    health.report(4)
    _feed(health, range(4, 8), _learned_logits())
    health.report(8)
    lines = health.summary()
    assert lines[0].startswith("[cls_constant, first at step 4, no longer at the last check]")
    _feed(health, range(8, 12), torch.full((4, 3), -3.0))
    health.report(12)
    assert health.summary()[0].startswith("[cls_constant, first at step 4] ")


def test_update_never_reads_a_tensor_back_to_the_host(monkeypatch):
    """The per-step work stays on the device: no .item()/.tolist()/bool()/float() of a tensor."""
    health = _monitor()
    labels = torch.zeros(4, 8, 8, dtype=torch.long)

    def sync(*args, **kwargs):
        raise AssertionError("host sync in TrainingHealth.update")

    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "numpy", "cpu"):
        monkeypatch.setattr(torch.Tensor, name, sync)
    _feed(health, range(3), _learned_logits(), labels, torch.zeros(4, 4, 8, 8), {"seg": 0.3})
    monkeypatch.undo()
    assert health.report(3, final=True)[0]["health/pseudo_fg_share"] == 0.0


def test_evaluation_background_message_compares_with_the_true_foreground():
    confusion = torch.zeros(3, 3, dtype=torch.int64)
    confusion[0, 0], confusion[1, 0], confusion[2, 0] = 700, 200, 100  # all predicted background
    msg = background_message(compute_metrics(confusion), "segmentation")
    assert msg == (
        "segmentation is (nearly) all background: 0.00% of the pixels predicted foreground "
        "where the ground truth has 30.00% (mIoU 23.33)"
    )
    confusion[1, 1] = 50  # 50 of 1050 pixels predicted foreground: 4.8% >= 0.1 x 33%
    assert background_message(compute_metrics(confusion)) is None
    assert background_message({"pred_pixels": [], "gt_pixels": []}) is None
    # no foreground in the ground truth: nothing to compare with
    assert background_message(compute_metrics(torch.tensor([[10, 0], [0, 0]]))) is None


def test_warnings_round_trip_through_scalars_jsonl(tmp_path: Path):
    health = _monitor()
    _feed(health, range(4), torch.full((4, 3), -3.0))
    _, new = health.report(4)
    path = tmp_path / "scalars.jsonl"
    path.write_text('{"step": 2, "loss/total": 1.0}\nnot json\n')
    append_warnings(path, 4, new)
    assert [(w.condition, w.step, w.message) for w in read_warnings(path)] == [
        (w.condition, w.step, w.message) for w in new
    ]


# --------------------------------------------------------------------------- tiny runs
# Short windows so that a 20-step run decides four times.
SHORT = ["train.max_steps=20", "train.log_every=5", "train.eval_every=20", "train.ckpt_every=20",
         "train.health.window=5", "train.health.warmup_steps=5"]  # fmt: skip
# One object per image (tag frequency 1/8) and a high learning rate: the network collapses to
# the constant predictor within a few steps (its CAMs die, so do the pseudo labels), the
# failure of issue 17.
NEVER_TOOK_OFF = ["optim.lr=0.03", "data.synth.max_objects=1"]


def _train(run: Path, *overrides: str) -> None:
    args = ["train", "--config", "synth_cpu", "--examples", "0", *TINY_OVERRIDES, f"experiment.work_dir={run}"]
    assert main([*args, *overrides]) == 0


def _jsonl_conditions(run: Path) -> list[str]:
    return [w.condition for w in read_warnings(run / "scalars.jsonl")]


def test_a_run_that_never_took_off_says_so_on_every_channel(tmp_path: Path, capsys):
    run = tmp_path / "run"
    _train(run, *SHORT, *NEVER_TOOK_OFF)
    out, err = capsys.readouterr()
    expected = {
        "cls_constant": "the classification loss has not come down from the constant predictor's level",
        "cls_f1": "the classifier's image-level F1 on the training batches is 0.000",
        "pseudo_background": "the pseudo labels hold (nearly) no foreground",
        "seg_background": "the segmentation head predicts (nearly) only background on the training batches",
        "eval_seg_background": "the seg prediction on 'val' at step 20 is (nearly) all background",
    }
    # console: each condition once, with what was seen and the levers
    for text in expected.values():
        assert err.count(text) == 1, text
    assert "real_cpu data.root=DIR" in err and "optim.lr (now 0.03)" in err and "cam.bg_threshold (now 0.4" in err
    # scalars.jsonl: one record per condition, the same text
    conditions = _jsonl_conditions(run)
    assert set(expected) <= set(conditions) and len(conditions) == len(set(conditions))
    assert all(w.message in err for w in read_warnings(run / "scalars.jsonl"))
    # end-of-training summary
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("training health: "))
    assert lines[head] == f"training health: {len(conditions)} warning(s) (also in scalars.jsonl and `dscnet report`):"
    for condition, text in expected.items():
        assert any(line.startswith(f"  - [{condition}, first at step ") and text in line for line in lines[head:])

    # dscnet eval says the segmentation is all background
    assert main(["eval", "--checkpoint", str(run / "checkpoints" / "last.pth")]) == 0
    err = capsys.readouterr().err
    assert "warning: seg/raw on 'val' is (nearly) all background: " in err and "model.backbone=small_cnn" in err

    # the HTML report shows a warning box with every training warning and each all-background evaluation
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    box = page[page.index('<div class="warn" id="health">') : page.index("</div>", page.index('id="health"'))]
    for condition in set(conditions) - {c for c in conditions if c.startswith("eval_")}:
        assert f"<b>{condition}</b>" in box
    assert html.escape(expected["cls_constant"]) in box
    assert "evaluation final/seg is (nearly) all background" in box and "evaluation val/seg_raw is (nearly) all background" in box


def test_all_ignore_pseudo_labels_and_a_dominating_loss_term(tmp_path: Path, capsys):
    # lr 0 keeps the initial network, whose CAMs are positive everywhere: with the uncertain
    # band (0, 1) every pixel is ignore; SGCL at weight 1e4 outweighs everything else.
    cfg = tiny_config(
        tmp_path, "train.max_steps=10", "train.log_every=5", "train.health.window=5", "optim.lr=0",
        "cam.low=0.0", "cam.high=1.0", "loss.sgcl.weight=10000",
    )  # fmt: skip
    trainer = Trainer(cfg, init_distributed("cpu"))
    trainer.fit()
    err = capsys.readouterr().err
    found = {w.condition: w.message for w in trainer.health.warnings}
    assert found["pseudo_ignore"].startswith("the pseudo labels are (nearly) all ignore over steps 1-5: ")
    assert "cam.low / cam.high (now 0.0 / 1.0)" in found["pseudo_ignore"]
    assert found["loss_dominance"].startswith("the loss term 'sgcl' dominates the total by ")
    assert "loss.sgcl.weight (now 10000" in found["loss_dominance"]
    assert {"pseudo_ignore", "loss_dominance"} <= set(_jsonl_conditions(tmp_path))
    assert err.count("warning: the pseudo labels are (nearly) all ignore") == 1


# Three classes without decoys or clutter: the small CNN learns the tags within 80 steps.
HEALTHY = ["train.max_steps=80", "train.log_every=20", "train.eval_every=80", "train.ckpt_every=80",
           "train.cls_warmup_steps=40", "loss.contrast_start_step=40", "train.health.window=20",
           "train.health.warmup_steps=60", "data.synth.num_classes=3", "data.synth.decoys=0",
           "data.synth.clutter=0"]  # fmt: skip


def test_a_healthy_tiny_run_warns_of_nothing(tmp_path: Path, capsys):
    run = tmp_path / "run"
    _train(run, *HEALTHY)
    out, err = capsys.readouterr()
    assert "warning" not in err and "training health: 0 warning(s)" in out.splitlines()
    records = [json.loads(line) for line in (run / "scalars.jsonl").read_text().splitlines()]
    assert not any("warnings" in r for r in records)
    # every check was decided on the last window, and passed
    last = next(r for r in reversed(records) if "health/cls_loss" in r)
    assert last["step"] == 80 and last["health/cls_loss"] < 0.95 * last["health/cls_constant"]
    assert last["health/cls_f1"] > 0.1 and last["health/pseudo_fg_share"] > 0.01 and last["health/seg_fg_share"] > 0.01
    assert last["health/max_term_ratio"] < 100
    assert main(["report", str(run)]) == 0
    assert 'class="warn"' not in (run / "report.html").read_text()
