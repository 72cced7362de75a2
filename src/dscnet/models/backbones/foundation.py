"""The encoders the field now wins with: timm's DINOv2 ViTs (patch 14) and CLIP ViT-B/16.

They are :class:`~dscnet.models.backbones.timm_backbones.TimmViTBackbone`s like ViT-B/16:
built with ``dynamic_img_size``/``dynamic_img_pad``, so any input size gives a
``ceil(H/p) x ceil(W/p)`` map (``p`` = 14 for DINOv2: a 448 px crop is a 32 x 32 grid), and
register/prefix tokens are dropped. ``model.pretrained=timm`` downloads the tagged timm
weights below; a local file may be in timm's names *or* in the original projects' names:
timm's own converter (``checkpoint_filter_fn``) renames OpenAI/open_clip CLIP state dicts
(``visual.*``), drops DINOv2's ``mask_token`` and moves its register tokens, and resamples
position embeddings saved for another grid. See docs/BACKBONES.md.
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import checkpoint_filter_fn

from dscnet.errors import CheckpointError
from dscnet.models.backbones.timm_backbones import TimmViTBackbone, register_timm_vit

#: dscnet name -> timm name with the pretrained tag that ``pretrained=timm`` fetches.
FOUNDATION_VITS: dict[str, str] = {
    "vit_small_patch14_dinov2": "vit_small_patch14_dinov2.lvd142m",
    "vit_base_patch14_dinov2": "vit_base_patch14_dinov2.lvd142m",
    "vit_small_patch14_reg4_dinov2": "vit_small_patch14_reg4_dinov2.lvd142m",
    "vit_base_patch14_reg4_dinov2": "vit_base_patch14_reg4_dinov2.lvd142m",
    "vit_base_patch16_clip_224": "vit_base_patch16_clip_224.openai",
}


class FoundationViTBackbone(TimmViTBackbone):
    """A timm ViT that also reads the original DINOv2 and CLIP checkpoint layouts."""

    def convert_checkpoint(
        self, state_dict: dict[str, torch.Tensor], source: str
    ) -> dict[str, torch.Tensor]:
        """Rename foreign layouts to timm's with timm's converter (timm names pass through)."""
        try:
            return checkpoint_filter_fn(dict(state_dict), self.body)
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(
                f"{source}: cannot convert the checkpoint to timm's ViT layout ({exc}); "
                "is it a weight file of this backbone?"
            ) from None


for _name, _timm_name in FOUNDATION_VITS.items():
    register_timm_vit(_name, _timm_name, backbone_cls=FoundationViTBackbone)
