"""The language model: transformers' Qwen2ForCausalLM built from a config, run layer by layer.

`decoder_hidden_states` runs the first `num_layers` decoder layers and returns the same tuple as
`output_hidden_states=True` would (index 0 = embedding output, index i = output of layer i, the last
layer's output after the final RMSNorm), so a pass that only needs layer M stops there.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import Qwen2Config, Qwen2ForCausalLM
from transformers.masking_utils import create_causal_mask

from craft_vla.models.config import LLMConfig


def qwen2_config(llm: LLMConfig) -> Qwen2Config:
    return Qwen2Config(
        hidden_size=llm.hidden_size,
        num_hidden_layers=llm.num_hidden_layers,
        num_attention_heads=llm.num_attention_heads,
        num_key_value_heads=llm.num_key_value_heads,
        intermediate_size=llm.intermediate_size,
        vocab_size=llm.vocab_size,
        rms_norm_eps=llm.rms_norm_eps,
        rope_theta=llm.rope_theta,
        max_position_embeddings=llm.max_position_embeddings,
        tie_word_embeddings=llm.tie_word_embeddings,
        use_sliding_window=False,
        hidden_act="silu",
        attn_implementation="sdpa",
    )


def build_language_model(llm: LLMConfig) -> Qwen2ForCausalLM:
    """A randomly initialised Qwen2ForCausalLM (no remote code)."""
    return Qwen2ForCausalLM(qwen2_config(llm))


def decoder_hidden_states(
    language_model: Qwen2ForCausalLM, inputs_embeds: Tensor, attention_mask: Tensor, num_layers: int
) -> tuple[Tensor, ...]:
    """Hidden states (num_layers + 1 tensors of (B, S, D)) of the first `num_layers` decoder layers.

    `attention_mask` (B, S) is true on real tokens; positions are 0..S-1 (right padding).
    """
    decoder = language_model.model
    total = decoder.config.num_hidden_layers
    if not 0 <= num_layers <= total:
        raise ValueError(f"num_layers must be in [0, {total}], got {num_layers}")
    position_ids = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device).unsqueeze(0)
    mask = create_causal_mask(decoder.config, inputs_embeds, attention_mask, None, position_ids)
    position_embeddings = decoder.rotary_emb(inputs_embeds, position_ids)
    hidden = inputs_embeds
    states = [hidden]
    for layer in decoder.layers[:num_layers]:
        hidden = layer(
            hidden, attention_mask=mask, position_ids=position_ids, position_embeddings=position_embeddings
        )
        states.append(hidden)
    if num_layers == total:
        states[-1] = decoder.norm(hidden)
    return tuple(states)
