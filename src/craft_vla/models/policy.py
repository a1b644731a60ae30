"""VLAAdapterPolicy: the one module the trainer wraps (DDP / FSDP2),
holding `vla`, `action_head`, `proprio_projector`.

Both passes go through `forward`, so a wrapper averages both gradients:
- `policy(batch)` -> ActionOutput: the predicted chunk (B, T, A) and, with `actions` in the batch,
  the L1 loss;
- `policy(batch, anchor_spec=spec)` -> (B, F) anchor features from the VLM truncated after layer
  max(raw_layer, aq_layer): no policy head, no later layers, no LM head.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from craft_vla.craft import AnchorSpec, anchor_features
from craft_vla.models.action_head import L1RegressionActionHead
from craft_vla.models.bridge import gather_tokens, mask_positions, text_positions
from craft_vla.models.config import VLAAdapterConfig
from craft_vla.models.projectors import ProprioProjector
from craft_vla.models.vlm import VLM

Batch = dict[str, Tensor]


@dataclass
class ActionOutput:
    """What the action pass returns.

    actions (B, T, A) normalised; loss: mean L1 to `batch["actions"]` (None without targets);
    metrics: detached L1 of the current action and of the next ones; raw_latents / aq_latents:
    the per-layer bridge conditions C_R (B, P, D) and C_AQ (B, Q, D) of layers 0..L;
    features: (B, F) when a `feature_spec` was given.
    """

    actions: Tensor
    loss: Tensor | None = None
    metrics: dict[str, Tensor] = field(default_factory=dict)
    raw_latents: tuple[Tensor, ...] = ()
    aq_latents: tuple[Tensor, ...] = ()
    features: Tensor | None = None


class VLAAdapterPolicy(nn.Module):
    """VLA-Adapter: VLM with action queries, bridge-attention L1 head, proprio projector."""

    def __init__(self, config: VLAAdapterConfig, vla: VLM | None = None) -> None:
        super().__init__()
        self.config = config
        self.vla = VLM(config) if vla is None else vla
        self.action_head = L1RegressionActionHead(
            hidden_dim=config.hidden_size,
            action_dim=config.action_dim,
            chunk_length=config.chunk_length,
            num_blocks=config.num_head_blocks,
            use_pro_version=config.use_pro_version,
            num_heads=config.head_num_heads,
            input_noise_std=config.head_input_noise_std,
        )
        self.proprio_projector = (
            ProprioProjector(config.proprio_dim, config.hidden_size) if config.use_proprio else None
        )
        freeze_unused(self)

    def bridge_positions(self, attention_mask: Tensor, num_patches: int) -> tuple[Tensor, Tensor]:
        """(raw_mask, aq_mask) bool (B, S + num_patches); the one definition used by
        training, anchors and inference."""
        return unwrap_vlm(self.vla).bridge_positions(attention_mask, num_patches)

    def blocks(self) -> list[nn.Module]:
        """The repeated blocks (both towers' ViT blocks, the decoder layers, the head's blocks), in order.

        The natural units for FSDP2's per-block `fully_shard` or activation checkpointing.
        """
        vla = unwrap_vlm(self.vla)
        towers = (vla.vision_backbone.featurizer, vla.vision_backbone.fused_featurizer)
        return [
            *(b for tower in towers for b in tower.blocks),
            *vla.language_model.model.layers,
            *self.action_head.model.mlp_resnet_blocks,
        ]

    def new_parameters(self) -> list[nn.Parameter]:
        """The trainable weights a pretrained VLM does not have, which fine-tuning learns from scratch: the
        action head, the proprio projector and the action queries."""
        modules = (self.action_head, self.proprio_projector, unwrap_vlm(self.vla).action_queries)
        return [p for m in modules if m is not None for p in m.parameters() if p.requires_grad]

    def forward(
        self, batch: Batch, anchor_spec: AnchorSpec | None = None, feature_spec: AnchorSpec | None = None
    ) -> ActionOutput | Tensor:
        """Action pass (ActionOutput), or with `anchor_spec` the truncated anchor pass ((B, F) features).

        `feature_spec` additionally returns the anchor features of the full action pass in
        `ActionOutput.features` (read from the hidden states it already computed).
        """
        vla = unwrap_vlm(self.vla)
        raw_mask, aq_mask = self.bridge_positions(
            batch["attention_mask"], vla.num_patches(batch["pixel_values"])
        )
        if anchor_spec is not None:
            hidden = vla.hidden_states(batch, num_layers=anchor_spec.last_layer)
            return spec_features(hidden, raw_mask, aq_mask, anchor_spec, self._text_mask(batch, anchor_spec))
        hidden = vla.hidden_states(batch)
        raw_index = mask_positions(raw_mask, vla.num_patches(batch["pixel_values"]))
        aq_index = mask_positions(aq_mask, self.config.num_action_queries)
        raw_latents = tuple(gather_tokens(h, raw_index) for h in hidden)
        aq_latents = tuple(gather_tokens(h, aq_index) for h in hidden)
        actions = self.action_head(raw_latents[1:], aq_latents[1:], self._proprio_token(batch))
        out = ActionOutput(actions=actions, raw_latents=raw_latents, aq_latents=aq_latents)
        if "actions" in batch:
            out.loss, out.metrics = l1_action_loss(actions, batch["actions"])
        if feature_spec is not None:
            out.features = spec_features(
                hidden, raw_mask, aq_mask, feature_spec, self._text_mask(batch, feature_spec)
            )
        return out

    def _text_mask(self, batch: Batch, spec: AnchorSpec) -> Tensor | None:
        """The prompt's text positions when `spec` anchors them, else None."""
        if not spec.text:
            return None
        patches = unwrap_vlm(self.vla).num_patches(batch["pixel_values"])
        return text_positions(batch["attention_mask"], patches, self.config.num_action_queries)

    def _proprio_token(self, batch: Batch) -> Tensor | None:
        """The projected proprio (B, 1, D), or None when the policy does not use proprio."""
        if self.proprio_projector is None:
            return None
        if "proprio" not in batch:
            raise KeyError(
                "this policy uses proprio (config.use_proprio) but the batch has no 'proprio' entry"
            )
        proprio = batch["proprio"]
        weight = self.proprio_projector.fc1.weight
        if self.config.round_proprio_bf16:
            proprio = proprio.to(torch.bfloat16)
        return self.proprio_projector(proprio.to(weight.dtype)).unsqueeze(1)


def freeze_unused(policy: VLAAdapterPolicy) -> None:
    """No gradient for parameters the action pass never uses (the towers' last block and pooling, `film_gen`).

    They stay in the checkpoints; frozen, DDP needs no unused-parameter search for the action pass and
    the optimizer does not decay them.
    """
    unused = unwrap_vlm(policy.vla).vision_backbone.unused_parts()
    unused += [
        block.film_gen for block in policy.action_head.model.mlp_resnet_blocks if hasattr(block, "film_gen")
    ]
    for module in unused:
        module.requires_grad_(False)


def spec_features(
    hidden: tuple[Tensor, ...],
    raw_mask: Tensor,
    aq_mask: Tensor,
    spec: AnchorSpec,
    text_mask: Tensor | None = None,
) -> Tensor:
    """craft's [Pool(C_R^(m)); Pool(C_AQ^(M))] (B, F) from hidden states and the bridge positions."""
    return anchor_features(
        hidden, raw_mask, aq_mask, spec.raw_layer, spec.aq_layer, spec.pool, spec.parts, text_mask
    )


def unwrap_vlm(vla: nn.Module) -> VLM:
    """The VLM itself, also when peft wraps it (PeftModel.get_base_model)."""
    return vla if isinstance(vla, VLM) else vla.get_base_model()


def l1_action_loss(predicted: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Mean L1 (the training loss) and detached side metrics: L1 of the current
    action and of the next ones."""
    if predicted.shape != target.shape:
        raise ValueError(
            f"predicted actions {tuple(predicted.shape)} and targets {tuple(target.shape)} differ in shape"
        )
    predicted, target = predicted.float(), target.float()
    loss = F.l1_loss(predicted, target)
    with torch.no_grad():
        metrics = {
            "curr_action_l1_loss": F.l1_loss(predicted[:, 0], target[:, 0]),
            "next_actions_l1_loss": F.l1_loss(predicted[:, 1:], target[:, 1:]),
        }
    return loss, metrics


def build_policy(config: VLAAdapterConfig, device: torch.device | str | None = None) -> VLAAdapterPolicy:
    """A randomly initialised policy (action queries at zero); `device="meta"` builds it without memory."""
    with torch.device(device) if device is not None else contextlib.nullcontext():
        return VLAAdapterPolicy(config)
