"""Anchor features, pooling, hooks and the retention loss against direct computations."""

import pytest
import torch
from torch import nn

from craft_vla.craft import AnchorSpec, HiddenStateHooks, anchor_features, pool_tokens, retention_loss


def test_masked_mean_pooling_matches_loop():
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 7, 5, generator=gen, dtype=torch.float64)
    mask = torch.rand(3, 7, generator=gen) > 0.4
    mask[:, 0] = True
    pooled = pool_tokens(hidden, mask)
    for b in range(3):
        expected = hidden[b][mask[b]].mean(dim=0)
        torch.testing.assert_close(pooled[b].double(), expected, rtol=1e-6, atol=1e-6)
    assert pooled.dtype == torch.float32


def test_tokens_pooling_keeps_order_and_checks_counts():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    mask = torch.tensor([[True, False, True, False], [False, True, True, False]])
    out = pool_tokens(hidden, mask, mode="tokens")
    assert torch.equal(out[0], torch.cat([hidden[0, 0], hidden[0, 2]]))
    assert torch.equal(out[1], torch.cat([hidden[1, 1], hidden[1, 2]]))
    with pytest.raises(ValueError, match="same number"):
        pool_tokens(hidden, torch.tensor([[True] * 4, [True, False, False, False]]), mode="tokens")


def test_anchor_features_concatenate_raw_and_aq_parts():
    gen = torch.Generator().manual_seed(1)
    states = tuple(torch.randn(2, 6, 4, generator=gen) for _ in range(5))
    raw = torch.zeros(2, 6, dtype=torch.bool)
    raw[:, :3] = True
    aq = torch.zeros(2, 6, dtype=torch.bool)
    aq[:, 4:] = True
    f = anchor_features(states, raw, aq, raw_layer=2, aq_layer=4)
    assert f.shape == (2, 8)
    torch.testing.assert_close(f[:, :4], states[2][:, :3].mean(1))
    torch.testing.assert_close(f[:, 4:], states[4][:, 4:].mean(1))
    torch.testing.assert_close(anchor_features(states, raw, aq, 2, 4, parts="aq"), f[:, 4:])
    with pytest.raises(IndexError, match="layer 7"):
        anchor_features(states, raw, aq, raw_layer=7, aq_layer=4)


def test_several_raw_layers_per_token_then_the_text_mean():
    gen = torch.Generator().manual_seed(2)
    states = tuple(torch.randn(2, 7, 4, generator=gen) for _ in range(5))
    raw = torch.zeros(2, 7, dtype=torch.bool)
    raw[:, :3] = True
    text = torch.zeros(2, 7, dtype=torch.bool)
    text[0, 3:5] = True
    text[1, 3:6] = True  # prompts of other lengths
    aq = torch.zeros(2, 7, dtype=torch.bool)
    aq[:, 6] = True
    f = anchor_features(states, raw, aq, (1, 3), 4, pool="tokens", parts="raw", text_positions=text)
    by_hand = [states[1][:, :3].flatten(1), states[3][:, :3].flatten(1)]
    by_hand += [torch.stack([states[k][0, 3:5].mean(0), states[k][1, 3:6].mean(0)]) for k in (1, 3)]
    torch.testing.assert_close(f, torch.cat(by_hand, dim=1))
    assert AnchorSpec((1, 3), 4, parts="raw", text=True).layers == (1, 3)
    assert AnchorSpec([1, 3], 4) == AnchorSpec((1, 3), 4)  # a list from a config file is a tuple
    with pytest.raises(ValueError, match="twice"):
        AnchorSpec((2, 2), 4)
    with pytest.raises(ValueError, match="text"):
        AnchorSpec(2, 4, parts="aq", text=True)


def test_spec_validates_and_reports_last_layer():
    assert AnchorSpec(3, 6).last_layer == 6
    assert AnchorSpec(3, 6, parts="raw").last_layer == 3
    with pytest.raises(ValueError, match="pool"):
        AnchorSpec(1, 2, pool="max")


def test_hooks_capture_layer_outputs_and_are_removed():
    layers = nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])
    x = torch.randn(2, 4)
    with HiddenStateHooks({1: layers[0], 3: layers[2]}) as hooks:
        h = x
        outs = []
        for layer in layers:
            h = layer(h)
            outs.append(h)
    assert torch.equal(hooks.hidden_states[1], outs[0]) and torch.equal(hooks.hidden_states[3], outs[2])
    assert all(len(layer._forward_hooks) == 0 for layer in layers)


def test_retention_loss_formula():
    gen = torch.Generator().manual_seed(2)
    f, f_tilde = torch.randn(4, 6, generator=gen), torch.randn(4, 6, generator=gen)
    expected = sum(float(((f[b].double() - f_tilde[b].double()) ** 2).sum()) for b in range(4)) / 4
    assert retention_loss(f, f_tilde).item() == pytest.approx(expected, rel=1e-6)
    assert retention_loss(f, f).item() == 0.0
    with pytest.raises(ValueError, match="shape"):
        retention_loss(f, f_tilde[:, :3])
