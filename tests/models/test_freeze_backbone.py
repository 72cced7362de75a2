"""model.freeze_backbone: heads train on a fixed encoder that stays in eval mode."""

from __future__ import annotations

import pytest
import torch

from dscnet.config import load_config
from dscnet.engine.distributed import init_distributed
from dscnet.engine.trainer import Trainer
from dscnet.errors import ConfigError
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


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet18"])
def test_freeze_levels_fixes_the_stem_and_first_stages_only(name):
    cfg = load_config("base", [f"model.backbone={name}", "model.output_stride=32", "model.freeze_levels=2"])
    model = build_model(cfg, num_classes=3)
    body = model.backbone.body
    frozen = {n for n, p in body.named_parameters() if not p.requires_grad}
    stride4 = str(body.feature_info[1]["module"])  # blocks.1 / layer1
    assert frozen and all(not n.startswith(("blocks.2", "layer2", "conv_head")) for n in frozen)
    assert any(n.startswith(stride4 + ".") for n in frozen)
    model.train()
    assert all(not m.training for m in model.backbone.frozen) and model.backbone.body.training
    x = torch.randn(2, 3, 64, 64)
    model(x)["seg_logits"].sum().backward()
    assert all(p.grad is None for n, p in body.named_parameters() if n in frozen)
    assert all(p.grad is not None for n, p in body.named_parameters() if n not in frozen and "head" not in n and n.startswith(("blocks.2", "layer2")))
    trainable = {id(p) for group in model.param_groups() for p in group}
    assert not any(id(p) in trainable for n, p in body.named_parameters() if n in frozen)


def test_freeze_levels_is_refused_where_it_cannot_apply():
    with pytest.raises(ConfigError, match="cannot freeze its first levels"):
        build_model(load_config("base", ["model.freeze_levels=1"]), num_classes=3)  # small_cnn
    with pytest.raises(ConfigError, match="has 5 feature levels"):
        build_model(load_config("base", ["model.backbone=resnet18", "model.freeze_levels=5"]), num_classes=3)
