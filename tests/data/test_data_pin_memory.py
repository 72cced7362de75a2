"""Loaders pin memory for a CUDA device only (the trainer and evaluate decide from the device)."""

from __future__ import annotations

import torch

from dscnet.config import load_config
from dscnet.data.build import build_dataset, build_eval_loader, build_train_loader
from dscnet.engine import evaluate as evaluate_mod
from dscnet.engine import trainer as trainer_mod
from dscnet.engine.distributed import init_distributed
from tests.conftest import tiny_config


def test_loaders_pin_memory_when_asked():
    cfg = load_config("base", ["data.synth.num_train=8", "data.synth.num_val=4", "data.synth.image_size=32"])
    train = build_dataset(cfg, "train", train=True)
    val = build_dataset(cfg, "val", train=False)
    assert build_train_loader(cfg, train).pin_memory is False
    assert build_train_loader(cfg, train, pin_memory=True).pin_memory is True
    assert build_eval_loader(cfg, val).pin_memory is False
    assert build_eval_loader(cfg, val, pin_memory=True).pin_memory is True


def test_trainer_and_evaluation_pin_only_for_cuda(tmp_path, monkeypatch):
    asked = []

    def spy(real):
        def wrapped(*args, pin_memory=False, **kwargs):
            asked.append(pin_memory)
            return real(*args, pin_memory=pin_memory, **kwargs)

        return wrapped

    monkeypatch.setattr(trainer_mod, "build_train_loader", spy(build_train_loader))
    monkeypatch.setattr(evaluate_mod, "build_eval_loader", spy(build_eval_loader))
    trainer = trainer_mod.Trainer(tiny_config(tmp_path, "train.max_steps=1"), init_distributed("cpu"))
    evaluate_mod.evaluate(trainer.model, trainer.val_set, trainer.cfg, device=torch.device("cpu"))
    assert asked == [False, False]
