"""DSCL: the joint objective of docs/METHOD.md §2.

``L = L_cls + λ_seg·L_seg + λ_p·L_PGCL + λ_s·L_SGCL + λ_x·L_cross``

This module turns one forward pass of :class:`~dscnet.models.dscnet.DSCNetModel` into the
loss: it asks the :class:`~dscnet.cam.labeler.PseudoLabeler` it was given for the online
pseudo labels (without gradient), and applies each term with its weight, switch and start
step (the SGCL class nodes come from the model's forward pass). Every ablation row (B, B+PGCL, B+SGCL, B+PGCL+SGCL, DSCNet)
is this one code path with different switches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig
from torch import nn

from dscnet.cam.labeler import PseudoLabeler
from dscnet.losses.classification import multilabel_soft_margin_loss
from dscnet.losses.cross_stream import CrossStreamContrast
from dscnet.losses.pgcl import PixelGroupContrast
from dscnet.losses.segmentation import segmentation_loss
from dscnet.losses.sgcl import SemanticGraphContrast


@dataclass
class LossOutput:
    """The weighted total and each unweighted term (for logging)."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    pseudo_labels: torch.Tensor | None = None


def _zero_touch(out: dict[str, torch.Tensor]) -> torch.Tensor:
    """``0 * sum`` of every floating output: connects idle heads to the loss at no effect."""
    return sum(
        (v.float().sum() * 0.0 for v in out.values() if torch.is_floating_point(v)),
        torch.zeros((), device=out["cls_logits"].device),
    )


class DSCLObjective(nn.Module):
    """All training losses of DSCNet and of its ablations.

    The module owns the stateful parts of the losses (the PGCL pixel memory and the SGCL
    node memory) so that they are saved in checkpoints with the model. The pseudo labels come
    from ``labeler`` (stateless: it adds nothing to the checkpoint).
    """

    def __init__(self, cfg: DictConfig, num_classes: int, labeler: PseudoLabeler) -> None:
        super().__init__()
        loss = cfg.loss
        self.num_classes = num_classes
        self.labeler = labeler
        self.ignore_index = cfg.data.ignore_index
        self.supervision = str(cfg.train.supervision)
        self.group_size = cfg.data.sampler.group_size
        self.cls_warmup_steps = cfg.train.cls_warmup_steps
        self.contrast_start_step = loss.contrast_start_step
        self.w_seg = loss.seg.weight
        self.seg_balanced = loss.seg.balanced
        self.contrast_ramp_steps = loss.contrast_ramp_steps
        self.pgcl = (
            PixelGroupContrast(
                num_classes,
                temperature=loss.pgcl.temperature,
                max_anchors=loss.pgcl.max_anchors,
                memory_size=loss.pgcl.memory_size,
                ignore_index=self.ignore_index,
                embed_dim=cfg.model.proj_dim,
            )
            if loss.pgcl.enabled
            else None
        )
        self.w_pgcl = loss.pgcl.weight
        self.sgcl = (
            SemanticGraphContrast(
                num_classes,
                temperature=loss.sgcl.temperature,
                memory=loss.sgcl.memory,
                memory_size=loss.sgcl.memory_size,
                momentum=loss.sgcl.momentum,
                embed_dim=cfg.model.proj_dim,
            )
            if loss.sgcl.enabled
            else None
        )
        self.w_sgcl = loss.sgcl.weight
        self.cross = (
            CrossStreamContrast(
                temperature=loss.cross.temperature,
                max_anchors=loss.cross.max_anchors,
                ignore_index=self.ignore_index,
            )
            if loss.cross.enabled
            else None
        )
        self.w_cross = loss.cross.weight

    def switches(self, step: int) -> tuple[bool, bool]:
        """``(seg_on, contrast_on)`` of a weakly supervised step: L_seg after
        ``train.cls_warmup_steps``, the streams (when any is enabled) from
        ``loss.contrast_start_step``."""
        contrast = self.pgcl is not None or self.sgcl is not None or self.cross is not None
        return step >= self.cls_warmup_steps, contrast and step >= self.contrast_start_step

    def needs_labels(self, step: int) -> bool:
        """Whether the online pseudo labels are used at ``step`` (the model's forward may then
        make them once for the SGCL nodes and this objective)."""
        return self.supervision != "full" and any(self.switches(step))

    def contrast_ramp(self, step: int) -> float:
        """Factor of the contrastive weights at ``step``: 0 before ``loss.contrast_start_step``,
        then rising linearly to 1 over ``loss.contrast_ramp_steps`` (1 at once when 0)."""
        if step < self.contrast_start_step:
            return 0.0
        if self.contrast_ramp_steps <= 0:
            return 1.0
        return min(1.0, (step - self.contrast_start_step + 1) / self.contrast_ramp_steps)

    def forward(
        self,
        out: dict[str, torch.Tensor],
        model: nn.Module,
        images: torch.Tensor,
        tags: torch.Tensor,
        step: int,
        masks: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> LossOutput:
        """Compute the loss of one batch at training step ``step``.

        Args:
            out: the model's forward output.
            model: the (unwrapped) model; the labeler runs it again (without gradient) when it
                uses multi-scale CAMs.
            images: the normalised input batch.
            tags: multi-hot image tags ``[B, C]``.
            step: global optimisation step (drives the warm-up switches).
            masks: true masks, used only when ``train.supervision == "full"``.
            valid: ``[B, H, W]`` bool, False on crop padding; those pixels never get a
                pseudo label.
        """
        terms: dict[str, torch.Tensor] = {}
        terms["cls"] = multilabel_soft_margin_loss(out["cls_logits"].float(), tags)
        # Every output joins the graph (with weight 0 while its term is off), so that every
        # parameter receives a gradient each step and DDP needs no unused-parameter search.
        total = terms["cls"] + _zero_touch(out)

        if self.supervision == "full":
            if masks is None:
                raise ValueError("train.supervision=full needs true masks in the batch")
            terms["seg"] = segmentation_loss(out["seg_logits"].float(), masks)
            return LossOutput(total + terms["seg"], terms, masks)

        seg_on, contrast_on = self.switches(step)
        if not (seg_on or contrast_on):
            return LossOutput(total, terms, None)

        # CAMs, PAR and thresholds at the labeler's working scale, labels at the crop size
        # (made by the model's forward already when its SGCL nodes pool them).
        labels = out.get("pseudo_labels")
        if labels is None:
            labels = self.labeler(images, tags, cam_logits=out["cam_logits"], model=model, valid=valid)
        if seg_on:
            terms["seg"] = segmentation_loss(out["seg_logits"].float(), labels, balanced=self.seg_balanced)
            total = total + self.w_seg * terms["seg"]
        if not contrast_on:
            return LossOutput(total, terms, labels)

        embed = out.get("pixel_embed")
        ramp = self.contrast_ramp(step)
        if self.pgcl is not None:
            terms["pgcl"] = self.pgcl(embed.float(), labels, self.group_size)
            total = total + ramp * self.w_pgcl * terms["pgcl"]
        if self.sgcl is not None:
            terms["sgcl"] = self.sgcl(out["node_embed"], out["node_class"], out["node_image"])
            total = total + ramp * self.w_sgcl * terms["sgcl"]
        if self.cross is not None:
            terms["cross"] = self.cross(
                embed.float(),
                labels,
                out["node_embed"],
                out["node_class"],
                out["node_image"],
                self.group_size,
            )
            total = total + ramp * self.w_cross * terms["cross"]
        return LossOutput(total, terms, labels)
