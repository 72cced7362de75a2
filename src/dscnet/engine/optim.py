"""AdamW with a 10x head learning rate and a poly schedule (AFA/ToCo style)."""

from __future__ import annotations

from omegaconf import DictConfig
from torch import nn
from torch.optim import AdamW, Optimizer
from torch.optim.lr_scheduler import LambdaLR


def build_optimizer(model: nn.Module, cfg: DictConfig) -> AdamW:
    """AdamW over two groups: backbone at ``lr``, heads at ``lr * head_lr_mult``.

    ``cfg`` is the typed ``optim`` section (:class:`dscnet.config_schema.OptimConfig`).
    """
    backbone, heads = model.param_groups()
    lr = cfg.lr
    groups = [
        {"params": backbone, "lr": lr, "name": "backbone"},
        {"params": heads, "lr": lr * cfg.head_lr_mult, "name": "heads"},
    ]
    return AdamW(
        [g for g in groups if g["params"]],
        lr=lr,
        betas=tuple(cfg.betas),
        weight_decay=cfg.weight_decay,
    )


def poly_factor(step: int, max_steps: int, power: float, warmup_steps: int = 0) -> float:
    """Linear warm-up to 1 over ``warmup_steps``, then ``(1 - t/T)^power``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(step, max_steps) / max(max_steps, 1)
    return max(0.0, 1.0 - progress) ** power


def build_scheduler(optimizer: Optimizer, cfg: DictConfig, max_steps: int) -> LambdaLR:
    """Per-step poly schedule with optional linear warm-up."""
    power, warmup = cfg.poly_power, cfg.warmup_steps
    return LambdaLR(optimizer, lambda step: poly_factor(step, max_steps, power, warmup))
