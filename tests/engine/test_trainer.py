"""End-to-end training on a tiny synthetic set: logs, checkpoints, exact resume, NaN stop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dscnet.engine.distributed import init_distributed
from dscnet.engine.trainer import Trainer
from dscnet.errors import NonFiniteLossError
from dscnet.models.loading import load_checkpoint
from tests.conftest import tiny_config


class _Crash(Exception):
    pass


def _crash_at(step: int):
    def hook(current: int, trainer: Trainer) -> None:
        if current == step:
            raise _Crash(f"killed at step {step}")

    return hook


def test_training_writes_run_dir_and_resume_is_exact(tmp_path: Path):
    ctx = init_distributed("cpu")
    full = Trainer(tiny_config(tmp_path / "full"), ctx)
    result = full.fit()
    assert result.steps == 6
    run = tmp_path / "full"
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.pth").is_file()
    assert (run / "checkpoints" / "best.pth").is_file()
    assert (run / "eval" / "step_6" / "seg" / "metrics.json").is_file()
    logged = [json.loads(line) for line in (run / "scalars.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "loss/total" in r] == [2, 4, 6]
    # the streams join after contrast_start_step=2
    assert "loss/pgcl" in logged[-2] and "loss/sgcl" in logged[-2] and "loss/cross" in logged[-2]
    assert any(list(run.glob("tb/events.out.tfevents.*")))

    # Kill a second run after step 5: the last checkpoint is the one of step 4.
    crashed = Trainer(tiny_config(tmp_path / "crash"), ctx, hooks=[_crash_at(5)])
    with pytest.raises(_Crash):
        crashed.fit()
    assert load_checkpoint(tmp_path / "crash" / "checkpoints" / "last.pth")["step"] == 4
    resumed = Trainer(tiny_config(tmp_path / "crash"), ctx, resume="auto")
    assert resumed.step == 4
    # the per-step times of steps 1-4 travel in the checkpoint, so an ablation's step-time
    # column survives a resume
    assert [step for step, _ in resumed.step_times] == [1, 2, 3, 4]
    resumed.fit()
    assert [step for step, _ in resumed.step_times] == [1, 2, 3, 4, 5, 6]
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), f"{name} differs after resume"
    for a, b in zip(full.objective.state_dict().values(), resumed.objective.state_dict().values()):
        assert torch.equal(a, b)  # memories continue exactly too


def test_same_seed_same_numbers_different_seed_differs(tmp_path: Path):
    ctx = init_distributed("cpu")
    a = Trainer(tiny_config(tmp_path / "a", "train.max_steps=3"), ctx)
    a.fit()
    b = Trainer(tiny_config(tmp_path / "b", "train.max_steps=3"), ctx)
    b.fit()
    c = Trainer(tiny_config(tmp_path / "c", "train.max_steps=3", "experiment.seed=1"), ctx)
    c.fit()
    wa, wb, wc = (t.model.classifier.state_dict() for t in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_non_finite_loss_stops_with_message_and_keeps_checkpoint(tmp_path: Path, monkeypatch):
    ctx = init_distributed("cpu")
    trainer = Trainer(tiny_config(tmp_path / "nan"), ctx)
    original = trainer.objective.forward

    def poisoned(out, model, images, tags, step, **kwargs):
        loss = original(out, model, images, tags, step, **kwargs)
        if step >= 3:
            loss.total = loss.total * float("nan")
        return loss

    monkeypatch.setattr(trainer.objective, "forward", poisoned)
    with pytest.raises(NonFiniteLossError, match="non-finite loss at step 3"):
        trainer.fit()
    ckpt = load_checkpoint(tmp_path / "nan" / "checkpoints" / "last.pth")
    assert ckpt["step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_fully_supervised_mode_trains_on_masks(tmp_path: Path):
    ctx = init_distributed("cpu")
    trainer = Trainer(tiny_config(tmp_path / "fs", "train.supervision=full", "train.max_steps=2"), ctx)
    trainer.fit()
    logged = [json.loads(line) for line in (tmp_path / "fs" / "scalars.jsonl").read_text().splitlines()]
    assert "loss/seg" in logged[0] and "loss/pgcl" not in logged[0]


def test_cams_and_pseudo_labels_are_scored_on_eval_cam_split(tmp_path: Path):
    ctx = init_distributed("cpu")
    trainer = Trainer(tiny_config(tmp_path / "run", "train.max_steps=2"), ctx)
    trainer.fit()
    assert trainer.eval_split("seg") == "val"
    assert trainer.eval_split("cam") == trainer.eval_split("pseudo") == "train"  # synth_cpu's choice
    metrics = trainer.run_eval("final", what=("seg", "cam", "pseudo"))
    pixels = 48 * 48
    assert metrics["seg"]["num_pixels"] == 12 * pixels  # data.synth.num_val=12
    assert metrics["cam"]["num_pixels"] == metrics["pseudo"]["num_pixels"] == 48 * pixels
    written = json.loads((tmp_path / "run" / "eval" / "final" / "cam" / "metrics.json").read_text())
    assert "on train" in written["title"]

    on_val = Trainer(tiny_config(tmp_path / "val", "train.max_steps=2", "eval.cam_split=null"), ctx)
    assert on_val.eval_split("cam") == "val"


def test_periodic_evaluation_scores_the_val_subset_and_the_final_one_everything(tmp_path: Path):
    from dscnet.data.subset import eval_subset
    from dscnet.engine.evaluate import evaluate

    cfg = tiny_config(tmp_path, "train.max_steps=2", "train.eval_every=2", "eval.val_subset=5")
    trainer = Trainer(cfg, init_distributed("cpu"))
    trainer.fit()
    periodic = json.loads((tmp_path / "eval" / "step_2" / "seg" / "metrics.json").read_text())
    assert periodic["title"] == "seg mIoU on val, first 5 of 12 images at step 2"
    assert periodic["extra"]["images"] == 5 and periodic["extra"]["subset"] == "first"
    first5, _ = eval_subset(trainer.val_set, "val", 5)
    assert periodic["miou"] == pytest.approx(evaluate(trainer.model, first5, cfg).metrics["miou"])
    logged = [json.loads(line) for line in (tmp_path / "scalars.jsonl").read_text().splitlines()]
    assert any(r.get("val_subset/images") == 5 for r in logged)
    assert not any("val/seg_miou" in r for r in logged)  # a subset never poses as the full split
    trainer.run_eval("final")
    final = json.loads((tmp_path / "eval" / "final" / "seg" / "metrics.json").read_text())
    assert final["title"] == "seg mIoU on val, all 12 images at step 2"
    assert final["extra"]["subset"] is None and final["extra"]["images"] == 12
