"""DSCL: the joint objective of METHOD.md §2.

``L = L_cls + λ_seg·L_seg + λ_p·L_PGCL + λ_s·L_SGCL + λ_x·L_cross``

This module turns one forward pass of :class:`~dscnet.models.dscnet.DSCNetModel` into the
loss: it makes the online pseudo labels (CAM → PAR → thresholds, without gradient), builds the
SGCL class nodes and runs them through the model's graph, and applies each term with its
weight, switch and start step. Every ablation row (B, B+PGCL, B+SGCL, B+PGCL+SGCL, DSCNet)
is this one code path with different switches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from dscnet.cam.cams import cams_from_logits
from dscnet.cam.par import PAR
from dscnet.cam.pseudo_labels import labels_from_top_scores, top_tagged_scores
from dscnet.data.transforms import denormalize
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
    node memory) so that they are saved in checkpoints with the model.
    """

    def __init__(self, cfg: DictConfig, num_classes: int) -> None:
        super().__init__()
        loss, cam = cfg.loss, cfg.cam
        self.num_classes = num_classes
        self.ignore_index = int(cfg.data.ignore_index)
        self.supervision = str(cfg.train.get("supervision", "weak"))
        self.mean = tuple(float(v) for v in cfg.data.mean)
        self.std = tuple(float(v) for v in cfg.data.std)
        self.group_size = int(cfg.data.sampler.group_size)
        self.cls_warmup_steps = int(cfg.train.cls_warmup_steps)
        self.contrast_start_step = int(loss.contrast_start_step)
        self.bg_threshold = float(cam.bg_threshold)
        self.low, self.high = float(cam.low), float(cam.high)
        self.bg_node = bool(cfg.model.bg_node)
        self.w_seg = float(loss.seg.weight)
        self.par_scale = float(cam.par.get("scale", 1.0))
        self.par = (
            PAR(
                dilations=tuple(cam.par.dilations),
                num_iter=int(cam.par.num_iter),
                sigma_rgb=float(cam.par.sigma_rgb),
                sigma_pos=float(cam.par.sigma_pos),
                pos_weight=float(cam.par.pos_weight),
            )
            if cam.par.enabled
            else None
        )
        self.pgcl = (
            PixelGroupContrast(
                num_classes,
                temperature=float(loss.pgcl.temperature),
                max_anchors=int(loss.pgcl.max_anchors),
                memory_size=int(loss.pgcl.memory_size),
                ignore_index=self.ignore_index,
                embed_dim=int(cfg.model.proj_dim),
            )
            if loss.pgcl.enabled
            else None
        )
        self.w_pgcl = float(loss.pgcl.weight)
        self.sgcl = (
            SemanticGraphContrast(
                num_classes,
                temperature=float(loss.sgcl.temperature),
                memory=str(loss.sgcl.memory),
                memory_size=int(loss.sgcl.memory_size),
                momentum=float(loss.sgcl.momentum),
                embed_dim=int(cfg.model.proj_dim),
            )
            if loss.sgcl.enabled
            else None
        )
        self.w_sgcl = float(loss.sgcl.weight)
        self.cross = (
            CrossStreamContrast(
                temperature=float(loss.cross.temperature),
                max_anchors=int(loss.cross.max_anchors),
                ignore_index=self.ignore_index,
            )
            if loss.cross.enabled
            else None
        )
        self.w_cross = float(loss.cross.weight)

    @torch.no_grad()
    def top_scores(
        self, cam_logits: torch.Tensor, images: torch.Tensor, tags: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The threshold-free part of :meth:`pseudo_labels`: PAR-refined top tagged score and
        its class, at ``cam.par.scale`` of the input size (see :func:`top_tagged_scores`)."""
        size = tuple(max(1, round(s * self.par_scale)) for s in images.shape[-2:])
        cams = cams_from_logits(cam_logits.detach().float(), tags, size=size)
        rgb = denormalize(images.detach().float(), self.mean, self.std)
        return top_tagged_scores(cams, tags, par=self.par, image=rgb)

    def labels_from_top(
        self,
        top: torch.Tensor,
        cls: torch.Tensor,
        size: tuple[int, int],
        thresholds: tuple[float, float, float] | None = None,
    ) -> torch.Tensor:
        """Labels ``[B, *size]`` from :meth:`top_scores`' output, at ``(bg_threshold, low,
        high)`` (default: the config's), upsampled with nearest neighbour."""
        bg, low, high = thresholds or (self.bg_threshold, self.low, self.high)
        labels = labels_from_top_scores(top, cls, bg, low, high, self.ignore_index)
        if tuple(labels.shape[-2:]) != tuple(size):
            labels = F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()
        return labels

    @torch.no_grad()
    def pseudo_labels(
        self, cam_logits: torch.Tensor, images: torch.Tensor, tags: torch.Tensor
    ) -> torch.Tensor:
        """Online pseudo labels ``[B, H, W]`` (255 = uncertain) from detached CAMs, refined by PAR.

        CAMs, PAR and thresholds run at ``cam.par.scale`` of the input size (AFA refines at
        half size: PAR's cost grows with the pixel count); the labels are then upsampled to
        the input size with nearest neighbour.
        """
        top, cls = self.top_scores(cam_logits, images, tags)
        return self.labels_from_top(top, cls, tuple(images.shape[-2:]))

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
            model: the (unwrapped) model, whose ``graph`` builds SGCL node embeddings.
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

        seg_on = step >= self.cls_warmup_steps
        contrast_on = step >= self.contrast_start_step and (
            self.pgcl is not None or self.sgcl is not None or self.cross is not None
        )
        if not (seg_on or contrast_on):
            return LossOutput(total, terms, None)

        labels = self.pseudo_labels(out["cam_logits"], images, tags)
        if valid is not None:
            labels = labels.masked_fill(~valid.to(labels.device, torch.bool), self.ignore_index)
        if seg_on:
            terms["seg"] = segmentation_loss(out["seg_logits"].float(), labels)
            total = total + self.w_seg * terms["seg"]
        if not contrast_on:
            return LossOutput(total, terms, labels)

        embed = out.get("pixel_embed")
        if self.pgcl is not None:
            terms["pgcl"] = self.pgcl(embed.float(), labels, self.group_size)
            total = total + self.w_pgcl * terms["pgcl"]
        if self.sgcl is not None:
            terms["sgcl"] = self.sgcl(out["node_embed"], out["node_class"], out["node_image"])
            total = total + self.w_sgcl * terms["sgcl"]
        if self.cross is not None:
            terms["cross"] = self.cross(
                embed.float(),
                labels,
                out["node_embed"],
                out["node_class"],
                out["node_image"],
                self.group_size,
            )
            total = total + self.w_cross * terms["cross"]
        return LossOutput(total, terms, labels)
