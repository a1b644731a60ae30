"""The fused vision backbone: DINOv2 + SigLIP patch features of the second-to-last block, per image."""

from __future__ import annotations

import timm
import torch
from timm.layers import LayerScale as TimmLayerScale
from torch import Tensor, nn

from craft_vla.models.config import ViTConfig, VLAAdapterConfig

CHANNELS_PER_IMAGE = 6  # 3 DINOv2-normalised + 3 SigLIP-normalised


class LayerScale(nn.Module):
    """timm's LayerScale with its parameter named `scale_factor`, the name the checkpoints use."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale_factor = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale_factor


def build_featurizer(tower: ViTConfig, image_size: int) -> nn.Module:
    """A randomly initialised timm ViT with the tower's sizes, no classifier, LayerScale renamed."""
    vit = timm.create_model(
        tower.timm_name,
        pretrained=False,
        num_classes=0,
        img_size=image_size,
        patch_size=tower.patch_size,
        embed_dim=tower.embed_dim,
        depth=tower.depth,
        num_heads=tower.num_heads,
    )
    for block in vit.blocks:
        for name in ("ls1", "ls2"):
            old = getattr(block, name, None)
            if isinstance(old, TimmLayerScale):
                new = LayerScale(old.gamma.shape[0]).to(old.gamma.device)
                with torch.no_grad():
                    new.scale_factor.copy_(old.gamma)
                setattr(block, name, new)
    return vit


def patch_features(vit: nn.Module, images: Tensor) -> Tensor:
    """Patch tokens (N, num_patches, C) after the second-to-last block, prefix
    tokens dropped, no final norm."""
    (features,) = vit.forward_intermediates(
        images,
        indices=[len(vit.blocks) - 2],
        norm=False,
        output_fmt="NLC",
        intermediates_only=True,
        stop_early=True,
    )
    return features


def unused_parts(vit: nn.Module) -> list[nn.Module]:
    """The parts of a tower that the forward never runs: it stops after the second-to-last block."""
    parts = [vit.blocks[-1], *(getattr(vit, name, None) for name in ("norm", "fc_norm", "attn_pool", "head"))]
    return [m for m in parts if isinstance(m, nn.Module) and any(True for _ in m.parameters())]


class DinoSigLIPBackbone(nn.Module):
    """`featurizer` (DINOv2) and `fused_featurizer` (SigLIP), concatenated on the feature axis."""

    def __init__(self, config: VLAAdapterConfig) -> None:
        super().__init__()
        self.featurizer = build_featurizer(config.featurizer, config.image_size)
        self.fused_featurizer = build_featurizer(config.fused_featurizer, config.image_size)

    def unused_parts(self) -> list[nn.Module]:
        """Modules kept for checkpoint compatibility whose outputs are never used
        (last block, norms, pooling)."""
        return unused_parts(self.featurizer) + unused_parts(self.fused_featurizer)

    def forward(self, pixel_values: Tensor) -> Tensor:
        """(B, 6·I, H, W) -> (B, I·N, C_dino + C_siglip); the patches of image 0, then of image 1, ..."""
        batch, channels, height, width = pixel_values.shape
        if channels % CHANNELS_PER_IMAGE:
            raise ValueError(
                f"pixel_values must have 6 channels per image (3 DINOv2 + 3 SigLIP), got {channels} channels"
            )
        images = pixel_values.reshape(
            batch * channels // CHANNELS_PER_IMAGE, CHANNELS_PER_IMAGE, height, width
        )
        dino = patch_features(self.featurizer, images[:, :3])
        siglip = patch_features(self.fused_featurizer, images[:, 3:])
        fused = torch.cat([dino, siglip], dim=-1)
        return fused.reshape(batch, -1, fused.shape[-1])
