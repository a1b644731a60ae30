"""Matmul attention computes what SDPA computes: same actions, same hidden states, same gradients."""

from __future__ import annotations

import copy

import torch

from craft_vla.models.attention import set_matmul_attention

from .conftest import make_batch


def test_matmul_attention_matches_sdpa_forward_and_backward(tiny_config, tiny_policy):
    batch = make_batch(tiny_config, prompt_lengths=(9, 3, 6))  # right padding of different lengths
    matmul = copy.deepcopy(tiny_policy)
    set_matmul_attention(matmul)
    kinds = {
        m.config._attn_implementation
        for m in matmul.modules()
        if hasattr(m, "config") and hasattr(m.config, "_attn_implementation")
    }
    assert kinds == {"eager"}
    assert not any(m.fused_attn for m in matmul.modules() if hasattr(m, "fused_attn"))
    outputs = []
    for policy in (tiny_policy, matmul):
        policy.zero_grad()
        out = policy(batch)
        out.loss.backward()
        outputs.append((out, {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}))
    (sdpa_out, sdpa_grads), (mm_out, mm_grads) = outputs
    torch.testing.assert_close(mm_out.actions, sdpa_out.actions, rtol=1e-5, atol=1e-6)
    for a, b in zip(mm_out.raw_latents + mm_out.aq_latents, sdpa_out.raw_latents + sdpa_out.aq_latents):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert mm_grads.keys() == sdpa_grads.keys()
    assert any(n.startswith("vla.vision_backbone") for n in mm_grads)  # the towers' attention is covered too
    for name in sdpa_grads:
        torch.testing.assert_close(mm_grads[name], sdpa_grads[name], rtol=1e-4, atol=1e-6, msg=name)
