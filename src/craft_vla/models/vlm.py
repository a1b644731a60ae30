"""The VLM half of VLA-Adapter: vision towers, projector, Qwen2 and the action queries.

Attribute names are the HF-format checkpoint keys (`vision_backbone.*`, `projector.*`,
`language_model.*`, `action_queries.weight`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from craft_vla.models.bridge import bridge_positions, insert_patches, placeholder_mask
from craft_vla.models.config import VLAAdapterConfig
from craft_vla.models.llm import build_language_model, decoder_hidden_states
from craft_vla.models.projectors import FusedGELUProjector
from craft_vla.models.vision import DinoSigLIPBackbone


class VLM(nn.Module):
    """Maps (images, prompt + placeholders) to the LLM hidden states that the policy and CRaFT read."""

    def __init__(self, config: VLAAdapterConfig) -> None:
        super().__init__()
        self.config = config
        self.vision_backbone = DinoSigLIPBackbone(config)
        self.projector = FusedGELUProjector(config.vision_dim, config.hidden_size)
        self.language_model = build_language_model(config.llm)
        self.action_queries = nn.Embedding(config.num_action_queries, config.hidden_size)
        nn.init.zeros_(self.action_queries.weight)

    @property
    def num_layers(self) -> int:
        return self.config.llm.num_hidden_layers

    def multimodal_inputs(
        self, pixel_values: Tensor, input_ids: Tensor, attention_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Embeddings (B, S + P, D) and mask (B, S + P) of [first token, patches, prompt, action queries].

        The placeholder embeddings are replaced by `action_queries.weight`, in order.
        """
        queries = placeholder_mask(attention_mask, self.config.num_action_queries)
        embeds = self.language_model.get_input_embeddings()(input_ids)
        query_index = (queries.long().cumsum(dim=1) - 1).clamp_min(0)  # k-th placeholder of its row -> k
        query_embeds = self.action_queries.weight[query_index].to(embeds.dtype)
        embeds = torch.where(queries.unsqueeze(-1), query_embeds, embeds)
        patches = self.projector(self.vision_backbone(pixel_values))
        patch_mask = attention_mask.new_ones(patches.shape[:2])
        return insert_patches(embeds, patches.to(embeds.dtype)), insert_patches(attention_mask, patch_mask)

    def hidden_states(self, batch: dict[str, Tensor], num_layers: int | None = None) -> tuple[Tensor, ...]:
        """LLM hidden states of the multimodal sequence, index 0 = embeddings, i = layer i (B, S + P, D).

        With `num_layers` = M < L only the first M layers run (CRaFT's anchor pass).
        """
        embeds, mask = self.multimodal_inputs(
            batch["pixel_values"], batch["input_ids"], batch["attention_mask"]
        )
        layers = self.num_layers if num_layers is None else num_layers
        return decoder_hidden_states(self.language_model, embeds, mask, layers)

    def bridge_positions(self, attention_mask: Tensor, num_patches: int) -> tuple[Tensor, Tensor]:
        """(raw_mask, aq_mask), bool (B, S + num_patches): where C_R and C_AQ are read (see `bridge.py`)."""
        return bridge_positions(
            attention_mask, num_patches, self.config.num_action_queries, self.config.bridge_layout
        )

    def num_patches(self, pixel_values: Tensor) -> int:
        """Patch tokens for this input: patches per image × images (6 channels per image)."""
        return self.config.patches_per_image * (pixel_values.shape[1] // 6)
