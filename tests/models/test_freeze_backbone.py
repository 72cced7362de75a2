"""model.freeze_backbone: heads train on a fixed encoder that stays in eval mode."""

from __future__ import annotations

import torch

from dscnet.engine.distributed import init_distributed
from dscnet.engine.trainer import Trainer
from dscnet.models.dscnet import build_model
from tests.conftest import tiny_config


def test_a_frozen_backbone_never_changes_and_the_heads_do(tmp_path):
    cfg = tiny_config(tmp_path, "model.freeze_backbone=true", "train.max_steps=3")
    trainer = Trainer(cfg, init_distributed("cpu"))
    model = trainer.model
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    optimised = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    assert optimised and not backbone_ids & {id(p) for p in optimised}
    assert [g["name"] for g in trainer.optimizer.param_groups] == ["heads"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.fit()
    after = model.state_dict()
    # Weights and BatchNorm running statistics alike: the small CNN's BN stays in eval mode.
    assert all(torch.equal(after[k], v) for k, v in before.items() if k.startswith("backbone."))
    assert any(not torch.equal(after[k], v) for k, v in before.items() if k.startswith("seg_head."))
    assert model.training and not model.backbone.training
    assert all(not m.training for m in model.backbone.modules())


def test_frozen_features_keep_no_graph_and_checkpoints_match_the_unfrozen_layout(tmp_path):
    cfg = tiny_config(tmp_path, "model.freeze_backbone=true")
    frozen = build_model(cfg, 8).train()
    out = frozen(torch.randn(4, 3, 48, 48), torch.eye(8)[[0, 0, 1, 1]])
    assert not out["features"].requires_grad  # autograd stores none of the backbone's activations
    assert out["seg_logits"].requires_grad
    unfrozen = build_model(tiny_config(tmp_path / "u"), 8)
    assert frozen.state_dict().keys() == unfrozen.state_dict().keys()
    unfrozen.load_state_dict(frozen.state_dict())  # a frozen run's checkpoint loads anywhere
