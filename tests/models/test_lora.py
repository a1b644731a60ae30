"""LoRA as VLA-Adapter applies it, and the frozen snapshot obtained by disabling the adapters."""

from __future__ import annotations

import torch

from craft_vla.craft import AnchorSpec
from craft_vla.models.lora import adapters_disabled, apply_lora, lora_target_modules


def outputs(policy, batch):
    with torch.no_grad():
        out = policy.eval()(batch)
        features = policy(batch, anchor_spec=AnchorSpec(2, 4))
    return out.actions, features


def test_targets_every_linear_of_the_vlm_but_the_lm_head(tiny_policy):
    targets = set(lora_target_modules(tiny_policy.vla))
    assert "language_model.lm_head" not in targets
    for name in (
        "vision_backbone.featurizer.blocks.0.attn.qkv",
        "vision_backbone.fused_featurizer.attn_pool.kv",
        "projector.fc1",
        "language_model.model.layers.3.mlp.down_proj",
    ):
        assert name in targets
    assert "vision_backbone.featurizer.patch_embed.proj" not in targets  # a convolution
    assert len(targets) == 3 * 4 + 3 * 4 + 5 + 3 + 4 * 7  # two ViTs (+ SigLIP's pool), projector, LLM


def test_gaussian_init_equals_base_then_disabled_equals_base(tiny_policy, tiny_batch):
    base = outputs(tiny_policy, tiny_batch)
    policy = apply_lora(tiny_policy, rank=4, dropout=0.1)
    config = policy.vla.peft_config["default"]
    assert (config.r, config.lora_alpha, config.lora_dropout, config.init_lora_weights) == (
        4,
        8,
        0.1,
        "gaussian",
    )
    lora = dict(policy.named_parameters())
    assert all(p.abs().sum() == 0 for n, p in lora.items() if "lora_B" in n)
    assert all(p.abs().sum() > 0 for n, p in lora.items() if "lora_A" in n)
    initial = outputs(policy, tiny_batch)
    assert all(torch.equal(a, b) for a, b in zip(initial, base))

    policy.train()
    optimizer = torch.optim.SGD([p for p in policy.parameters() if p.requires_grad], lr=0.5)
    policy(tiny_batch).loss.backward()
    optimizer.step()
    trained = outputs(policy, tiny_batch)
    assert not torch.equal(trained[1], base[1])
    with adapters_disabled(policy):
        snapshot = outputs(policy, tiny_batch)
    assert torch.equal(snapshot[1], base[1])  # VLM features: base weights and the original action queries
    assert torch.equal(outputs(policy, tiny_batch)[1], trained[1])  # adapters back on


def test_trainable_parameters_are_adapters_queries_head_and_proprio(tiny_policy):
    policy = apply_lora(tiny_policy, rank=2)
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    vla = {n for n in trainable if n.startswith("vla.")}
    assert vla and all("lora_" in n or "action_queries.modules_to_save" in n for n in vla)
    assert any(n.startswith("action_head.") for n in trainable)
    assert any(n.startswith("proprio_projector.") for n in trainable)
    assert not any("film_gen" in n for n in trainable)
