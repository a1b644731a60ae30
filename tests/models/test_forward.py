"""The action pass, the truncated anchor pass and the bridge features, against independent references."""

from __future__ import annotations

import pytest
import torch

from craft_vla.craft import AnchorSpec, HiddenStateHooks, anchor_features
from craft_vla.models.bridge import placeholder_mask
from craft_vla.models.llm import decoder_hidden_states
from craft_vla.models.lora import apply_lora

from .conftest import make_batch

LAYERS = 4  # the tiny LLM


def test_decoder_loop_equals_hf_hidden_states(tiny_policy, tiny_batch):
    vla = tiny_policy.vla
    embeds, mask = vla.multimodal_inputs(
        tiny_batch["pixel_values"], tiny_batch["input_ids"], tiny_batch["attention_mask"]
    )
    with torch.no_grad():
        hf = vla.language_model(
            inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True
        ).hidden_states
        ours = decoder_hidden_states(vla.language_model, embeds, mask, LAYERS)
    assert len(ours) == len(hf) == LAYERS + 1
    for a, b in zip(ours, hf):
        assert torch.equal(a, b)


@pytest.mark.parametrize("last", [1, 2, LAYERS])
def test_truncated_forward_equals_full_up_to_m(tiny_policy, tiny_batch, last):
    with torch.no_grad():
        full = tiny_policy.vla.hidden_states(tiny_batch)
        truncated = tiny_policy.vla.hidden_states(tiny_batch, num_layers=last)
    assert len(truncated) == last + 1
    for i in range(last + 1):
        assert torch.equal(truncated[i], full[i])


def select(hidden, mask):
    """Boolean-mask selection, (B, S, D) -> (B, N, D): the reference for the gathers of the forward."""
    return hidden[mask].reshape(hidden.shape[0], -1, hidden.shape[-1])


def reference_features(hidden, attention_mask, num_patches, num_queries, raw_layer, aq_layer):
    """VLA-Adapter's training slicing, written out:
    C_R = h[:, :P]; C_AQ = h[:, P:-1] at the shifted query mask."""
    labels_mask = placeholder_mask(attention_mask, num_queries)[:, 1:]  # text token j+1 is a query
    raw = hidden[raw_layer][:, :num_patches].mean(dim=1)
    text = hidden[aq_layer][:, num_patches:-1]
    aq = torch.stack([text[b][labels_mask[b]].mean(dim=0) for b in range(text.shape[0])])
    return torch.cat([raw, aq], dim=-1)


@pytest.mark.parametrize("raw_layer,aq_layer", [(2, 4), (1, 3), (3, 3), (0, 2)])
def test_bridge_features_equal_hooked_decoder_outputs(tiny_policy, tiny_batch, raw_layer, aq_layer):
    """Features of the forward == features from forward hooks on the decoder layers
    (final norm for layer L)."""
    lm = tiny_policy.vla.language_model.model
    modules = {i: lm.layers[i - 1] for i in range(1, LAYERS)} | {LAYERS: lm.norm}
    spec = AnchorSpec(raw_layer, aq_layer)
    with torch.no_grad(), HiddenStateHooks(modules) as hooks:
        out = tiny_policy(tiny_batch, feature_spec=spec)
        embeds, _ = tiny_policy.vla.multimodal_inputs(
            tiny_batch["pixel_values"], tiny_batch["input_ids"], tiny_batch["attention_mask"]
        )
        hooked = {0: embeds, **hooks.hidden_states}
        anchored = tiny_policy(tiny_batch, anchor_spec=spec)
    num_patches = tiny_policy.vla.num_patches(tiny_batch["pixel_values"])
    expected = reference_features(hooked, tiny_batch["attention_mask"], num_patches, 8, raw_layer, aq_layer)
    torch.testing.assert_close(out.features, expected, rtol=1e-6, atol=1e-6)
    raw_mask, aq_mask = tiny_policy.bridge_positions(tiny_batch["attention_mask"], num_patches)
    assert torch.equal(out.features, anchor_features(hooked, raw_mask, aq_mask, raw_layer, aq_layer))
    assert torch.equal(anchored, out.features)


def test_outputs_identical_with_feature_extraction_on_and_off(tiny_policy, tiny_batch):
    spec = AnchorSpec(2, 3)
    with torch.no_grad():
        plain = tiny_policy(tiny_batch)
        tiny_policy(tiny_batch, anchor_spec=spec)
        with_features = tiny_policy(tiny_batch, feature_spec=spec)
        again = tiny_policy(tiny_batch)
    assert plain.features is None and with_features.features.shape == (2, 2 * 64)
    assert torch.equal(plain.actions, with_features.actions) and torch.equal(plain.actions, again.actions)
    assert torch.equal(plain.loss, with_features.loss)
    assert all(not m._forward_hooks for m in tiny_policy.modules())


def test_anchor_pass_stops_after_layer_m(tiny_policy, tiny_batch):
    """No policy head, no later LLM layer, no final norm, no LM head; gradients only where the pass ran."""
    tiny_policy.train()
    lm = tiny_policy.vla.language_model
    called = []
    watched = {
        "layer3": lm.model.layers[2],
        "layer4": lm.model.layers[3],
        "norm": lm.model.norm,
        "lm_head": lm.lm_head,
    }
    watched |= {"head": tiny_policy.action_head, "proprio": tiny_policy.proprio_projector}
    handles = [m.register_forward_hook(lambda *a, n=n: called.append(n)) for n, m in watched.items()]
    features = tiny_policy(tiny_batch, anchor_spec=AnchorSpec(1, 3))
    for handle in handles:
        handle.remove()
    assert called == ["layer3"]
    features.pow(2).sum().backward()
    assert lm.model.layers[2].mlp.up_proj.weight.grad is not None
    assert lm.model.layers[3].mlp.up_proj.weight.grad is None
    assert all(p.grad is None for p in tiny_policy.action_head.parameters())
    assert tiny_policy.vla.action_queries.weight.grad.abs().sum() > 0  # C_AQ reads queries 0..Q-2


def test_head_block_i_reads_layer_i_plus_1(tiny_policy, tiny_batch):
    inputs = {}
    blocks = tiny_policy.action_head.model.mlp_resnet_blocks
    handles = [
        b.register_forward_hook(lambda m, args, out, i=i: inputs.__setitem__(i, args))
        for i, b in enumerate(blocks)
    ]
    with torch.no_grad():
        hidden = tiny_policy.vla.hidden_states(tiny_batch)
        out = tiny_policy(tiny_batch)
        proprio = tiny_policy.proprio_projector(tiny_batch["proprio"].bfloat16().float()).unsqueeze(1)
    for handle in handles:
        handle.remove()
    raw_mask, aq_mask = tiny_policy.bridge_positions(tiny_batch["attention_mask"], 32)
    assert len(inputs) == LAYERS
    for i, (_, task, adapter) in inputs.items():
        assert torch.equal(task, select(hidden[i + 1], raw_mask))
        assert torch.equal(adapter, torch.cat([select(hidden[i + 1], aq_mask), proprio], dim=1))
    assert torch.equal(out.raw_latents[2], select(hidden[2], raw_mask))
    assert out.raw_latents[0].shape == (2, 32, 64) and out.aq_latents[0].shape == (2, 8, 64)


def test_loss_and_logged_l1(tiny_policy, tiny_batch):
    with torch.no_grad():
        out = tiny_policy(tiny_batch)
    diff = (out.actions - tiny_batch["actions"]).abs()
    assert out.actions.shape == (2, 8, 7)
    torch.testing.assert_close(out.loss, diff.mean())
    torch.testing.assert_close(out.metrics["curr_action_l1_loss"], diff[:, 0].mean())
    torch.testing.assert_close(out.metrics["next_actions_l1_loss"], diff[:, 1:].mean())
    assert tiny_policy(make_batch(tiny_policy.config, with_actions=False)).loss is None


def test_a_row_does_not_depend_on_padding_or_batch(tiny_policy, tiny_config):
    batch = make_batch(tiny_config, prompt_lengths=(9, 5))
    alone = {k: v[1:2] for k, v in batch.items()}
    alone["input_ids"], alone["attention_mask"] = (
        alone["input_ids"][:, : 5 + 8],
        alone["attention_mask"][:, : 5 + 8],
    )
    with torch.no_grad():
        torch.testing.assert_close(
            tiny_policy(alone).actions[0], tiny_policy(batch).actions[1], rtol=1e-5, atol=1e-5
        )


def test_missing_proprio_is_a_clear_error(tiny_policy, tiny_batch):
    del tiny_batch["proprio"]
    with pytest.raises(KeyError, match="proprio"):
        tiny_policy(tiny_batch)


@pytest.mark.parametrize("lora", [False, True])
def test_every_trainable_parameter_gets_a_gradient_in_the_action_pass(tiny_policy, tiny_batch, lora):
    """So DDP needs no unused-parameter search: never-run parts (last ViT block,
    pooling, film_gen) are frozen."""
    if lora:
        apply_lora(tiny_policy, rank=2)
    tiny_policy.train()(tiny_batch).loss.backward()
    no_grad = [n for n, p in tiny_policy.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == []
    frozen = {n for n, p in tiny_policy.named_parameters() if not p.requires_grad}
    assert any("film_gen" in n for n in frozen) and any("attn_pool" in n for n in frozen)
    assert "film_gen.0.weight" in tiny_policy.action_head.model.mlp_resnet_blocks[0].state_dict()
