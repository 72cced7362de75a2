import pytest
import torch
from omegaconf import OmegaConf

from dscnet.engine.optim import build_optimizer, build_scheduler, poly_factor


class _TwoPart(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Linear(2, 2)
        self.head = torch.nn.Linear(2, 1)

    def param_groups(self):
        return list(self.backbone.parameters()), list(self.head.parameters())


def test_poly_factor_known_values():
    assert poly_factor(0, 100, 0.9) == 1.0
    assert poly_factor(50, 100, 1.0) == pytest.approx(0.5)
    assert poly_factor(50, 100, 0.9) == pytest.approx(0.5**0.9)
    assert poly_factor(100, 100, 0.9) == 0.0
    assert poly_factor(0, 100, 0.9, warmup_steps=4) == pytest.approx(0.25)


def test_head_lr_multiplier_and_schedule():
    cfg = OmegaConf.create({"lr": 1e-3, "head_lr_mult": 10.0, "weight_decay": 0.0, "betas": [0.9, 0.999], "warmup_steps": 0, "poly_power": 1.0})
    opt = build_optimizer(_TwoPart(), cfg)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-3, 1e-2])
    sched = build_scheduler(opt, cfg, max_steps=10)
    for _ in range(5):
        opt.step()
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([5e-4, 5e-3])
