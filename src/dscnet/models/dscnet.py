"""The DSCNet network: backbone + CAM classifier + segmentation head + the two stream heads.

Only the backbone and the segmentation head run at inference (:meth:`DSCNetModel.segment`);
the PGCL projection head and the SGCL graph are training-time modules (docs/METHOD.md §3).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from dscnet.cam.cams import cams_from_logits
from dscnet.errors import ConfigError
from dscnet.models.backbones import build_backbone
from dscnet.models.heads.classifier import ClassifierHead
from dscnet.models.heads.projection import ProjectionHead
from dscnet.models.heads.segmentation import FPNHead, SegmentationHead
from dscnet.models.heads.semantic_graph import SemanticGraph, class_nodes, label_shares

DECODERS = ("aspp", "fpn")
NODE_WEIGHTS = ("cam", "pseudo")


class DSCNetModel(nn.Module):
    """Backbone ``f`` with the classification (CAM), segmentation, pixel-projection and graph heads.

    Args:
        backbone: a dense feature extractor with ``out_channels`` (see ``build_backbone``).
        num_classes: number of foreground classes ``C``.
        pooling: ``gap`` or ``gmp`` for the image scores.
        seg_hidden: width of the segmentation decoder.
        decoder: ``aspp`` (on the output map) or ``fpn`` (on the backbone's feature levels:
            a CNN's stride-8 and stride-16 stages and the output map; one level for ViTs).
        proj_dim: PGCL embedding width ``d`` (also the node width, so that the cross-stream
            term can compare pixels with nodes).
        graph_rounds: SGCL message-passing rounds.
        with_projection: build the PGCL projection head (needed by PGCL and the cross term).
        with_graph: build the SGCL graph (needed by SGCL and the cross term).
        bg_node: add one background node per image to the graph.
        node_exclude_padding: SGCL nodes pool only real pixels (``valid``), never crop padding.
        node_weights: ``cam``: SGCL nodes pool the features with the raw CAMs as weights;
            ``pseudo``: with the confident regions of the online pseudo labels (PAR-refined,
            thresholded; needs ``labeler`` in :meth:`forward`), the CAMs where a tagged class
            has no confident pixel.
        channels_last: run the backbone in channels-last memory format (faster for
            depthwise convolutions on CPUs).
        freeze_backbone: train the heads on a fixed encoder (as the CLIP-based methods do):
            the backbone's parameters get ``requires_grad=False`` (the optimiser never sees
            them, autograd keeps none of its activations) and it stays in eval mode.
        freeze_levels: freeze the stem and the first N feature levels of a CNN backbone only
            (``Backbone.freeze_levels``).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        pooling: str = "gap",
        seg_hidden: int = 128,
        proj_dim: int = 128,
        graph_rounds: int = 2,
        with_projection: bool = False,
        with_graph: bool = False,
        bg_node: bool = True,
        channels_last: bool = False,
        decoder: str = "aspp",
        node_exclude_padding: bool = False,
        freeze_backbone: bool = False,
        freeze_levels: int = 0,
        node_weights: str = "cam",
    ) -> None:
        super().__init__()
        if decoder not in DECODERS:
            raise ConfigError(f"model.decoder must be one of {', '.join(DECODERS)}, got '{decoder}'")
        self.num_classes = num_classes
        self.channels_last = channels_last
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            backbone.requires_grad_(False)
        backbone.freeze_levels(freeze_levels)
        self.bg_node = bg_node
        self.node_exclude_padding = node_exclude_padding
        if node_weights not in NODE_WEIGHTS:
            raise ConfigError(f"model.node_weights must be one of {', '.join(NODE_WEIGHTS)}, got '{node_weights}'")
        self.node_weights = node_weights
        self.backbone = backbone
        dim = backbone.out_channels
        self.classifier = ClassifierHead(dim, num_classes, pooling=pooling)
        self.seg_head: nn.Module = (
            FPNHead(list(backbone.level_channels), num_classes + 1, hidden=seg_hidden)
            if decoder == "fpn"
            else SegmentationHead(dim, num_classes + 1, hidden=seg_hidden)
        )
        self.projection = ProjectionHead(dim, proj_dim) if with_projection else None
        self.graph = SemanticGraph(dim, node_dim=proj_dim, rounds=graph_rounds) if with_graph else None

    def train(self, mode: bool = True) -> DSCNetModel:
        """``nn.Module.train``; a frozen backbone stays in eval mode (fixed BN statistics,
        no dropout), as a fixed encoder must."""
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.backbone(images)

    def _levels(self, images: torch.Tensor) -> list[torch.Tensor]:
        """What the segmentation head reads: every level for ``fpn``, else the output map."""
        if not self.seg_head.multi_level:
            return [self._features(images)]
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.backbone.feature_levels(images)

    def _decode(self, levels: list[torch.Tensor]) -> torch.Tensor:
        return self.seg_head(levels) if self.seg_head.multi_level else self.seg_head(levels[-1])

    def forward(
        self,
        images: torch.Tensor,
        tags: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
        labeler: Callable[..., torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Training forward pass; see docs/ARCHITECTURE.md for the returned keys.

        With ``tags`` and a graph, the SGCL class nodes are built and passed through the graph
        here, inside ``forward``, so that DDP sees every parameter the loss uses. With
        ``node_weights="pseudo"`` and a ``labeler`` (the objective's
        :class:`~dscnet.cam.labeler.PseudoLabeler`), the online pseudo labels are made here
        from this pass's CAMs (crop padding set to ignore) and returned as ``pseudo_labels``,
        which the objective then uses instead of making them again.
        """
        levels = self._levels(images)
        features = levels[-1]
        cam_logits, cls_logits = self.classifier(features)
        out = {
            "features": features,
            "cam_logits": cam_logits,
            "cls_logits": cls_logits,
            "seg_logits": self._decode(levels),
        }
        if self.projection is not None:
            out["pixel_embed"] = self.projection(features)
        if self.graph is not None and tags is not None:
            # Node weights come from detached CAMs: the graph stream shapes the shared
            # features, not the CAMs through their pooling weights.
            cams = cams_from_logits(cam_logits.detach().float(), tags)
            keep = valid if self.node_exclude_padding else None
            bg_weights = None
            if self.node_weights == "pseudo" and labeler is not None:
                labels = labeler(images, tags, cam_logits=cam_logits, model=self, valid=valid)
                out["pseudo_labels"] = labels
                shares = label_shares(labels, self.num_classes, tuple(features.shape[-2:]), labeler.ignore_index)
                fg = shares[:, 1:]
                # A tagged class without a confident pixel keeps its CAM as weights.
                empty = fg.sum(dim=(-2, -1), keepdim=True) == 0
                cams, bg_weights = torch.where(empty, cams, fg), shares[:, :1]
            nodes, node_class, node_image = class_nodes(
                features.float(), cams, tags, bg_node=self.bg_node, valid=keep, bg_weights=bg_weights
            )
            out["node_embed"] = F.normalize(self.graph(nodes), dim=-1)
            out["node_class"] = node_class
            out["node_image"] = node_image
        return out

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """Segmentation logits ``[B, C+1, H, W]`` at the input size. Never reads tags."""
        logits = self._decode(self._levels(images))
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)

    def cam(self, images: torch.Tensor) -> torch.Tensor:
        """CAM logits ``[B, C, h, w]`` at the feature resolution."""
        cam_logits, _ = self.classifier(self._features(images))
        return cam_logits

    def classify(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cam_logits, cls_logits)``: CAMs and image scores in one pass."""
        return self.classifier(self._features(images))

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """Backbone parameters and head parameters (the heads train at a higher lr)."""
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        ids = {id(p) for p in backbone}
        heads = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        return backbone, heads


def build_model(cfg: DictConfig, num_classes: int) -> DSCNetModel:
    """Build :class:`DSCNetModel` from the ``model`` and ``loss`` sections of a config."""
    m = cfg.model
    backbone = build_backbone(
        m.backbone,
        pretrained=m.pretrained,
        output_stride=m.output_stride,
        channels_last=m.channels_last,
    )
    loss = cfg.loss
    with_projection = loss.pgcl.enabled or loss.cross.enabled
    with_graph = loss.sgcl.enabled or loss.cross.enabled
    return DSCNetModel(
        backbone,
        num_classes,
        pooling=m.pooling,
        seg_hidden=m.seg_hidden,
        proj_dim=m.proj_dim,
        graph_rounds=m.graph_rounds,
        with_projection=with_projection,
        with_graph=with_graph,
        bg_node=m.bg_node,
        channels_last=m.channels_last,
        decoder=m.decoder,
        node_exclude_padding=m.node_exclude_padding,
        freeze_backbone=m.freeze_backbone,
        freeze_levels=m.freeze_levels,
        node_weights=m.node_weights,
    )
