"""The bridge-attention blocks and the head against float64 references written from the spec (section 11)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from craft_vla.models.action_head import BridgeBlock, L1RegressionActionHead, ProBridgeBlock

D, HEADS, T, P, Q = 32, 8, 5, 6, 4


def rotary_reference(x: torch.Tensor) -> torch.Tensor:
    """Positions 0..L-1 on (L, hd): pairs (2i, 2i+1) rotate, dimension k uses frequency k mod (hd/2)."""
    length, hd = x.shape
    half = hd // 2
    freqs = [10000.0 ** (-2.0 * j / hd) for j in range(half)]
    y = x.clone()
    for p in range(length):
        for i in range(half):
            a, b = x[p, 2 * i], x[p, 2 * i + 1]
            fa, fb = freqs[(2 * i) % half] * p, freqs[(2 * i + 1) % half] * p
            y[p, 2 * i] = a * math.cos(fa) - b * math.sin(fa)
            y[p, 2 * i + 1] = b * math.cos(fb) + a * math.sin(fb)
    return y


def block_reference(block, x, task, adapter, pro: bool) -> torch.Tensor:
    """One block, head by head, sample by sample, float64."""
    sd = {k: v.double() for k, v in block.state_dict().items()}

    def lin(name, t):
        return t @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]

    hd = D // HEADS
    gate = math.tanh(sd["gating_factor"].item())
    out = torch.zeros(x.shape, dtype=torch.float64)
    for b in range(x.shape[0]):
        sources = (x[b], adapter[b], task[b])
        names = (
            (("k_self", "v_self"), ("k_adapter", "v_adapter"), ("k_task", "v_task"))
            if pro
            else [("k_proj", "v_proj")] * 3
        )
        keys = [lin(k, s) for (k, _), s in zip(names, sources)]
        values = [lin(v, s) for (_, v), s in zip(names, sources)]
        q_all = lin("q_proj", x[b])
        for h in range(HEADS):
            sl = slice(h * hd, (h + 1) * hd)
            q, ks, vs = q_all[:, sl], [k[:, sl] for k in keys], [v[:, sl] for v in values]
            if pro:
                q, ks = rotary_reference(q), [rotary_reference(k) for k in ks]
            scores = torch.cat([q @ ks[0].T, q @ ks[1].T, gate * (q @ ks[2].T)], dim=1) / math.sqrt(hd)
            out[b, :, sl] = torch.softmax(scores, dim=1) @ torch.cat(vs, dim=0)
    residual = lin("o_proj", out) + x
    normed = F.layer_norm(residual, (D,), sd["ffn.0.weight"], sd["ffn.0.bias"])
    return torch.relu(lin("ffn.1", normed))


def randomize(module) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.3)


@pytest.mark.parametrize("pro", [True, False])
def test_block_matches_reference(pro):
    block = (ProBridgeBlock if pro else BridgeBlock)(D, HEADS).double()
    randomize(block)
    g = torch.Generator().manual_seed(0)
    x, task, adapter = (torch.randn(2, n, D, generator=g, dtype=torch.float64) for n in (T, P, Q + 1))
    got = block(x, task, adapter)
    tol = 1e-6 if pro else 1e-10  # the released rotary tables are computed in float32
    torch.testing.assert_close(got, block_reference(block, x, task, adapter, pro), rtol=tol, atol=tol)


def test_gate_at_zero_gives_task_tokens_flat_scores():
    """tanh(0) = 0: the task scores are 0 (not -inf), so the raw latent still gets softmax weight."""
    block = ProBridgeBlock(D, HEADS).double()
    randomize(block)
    with torch.no_grad():
        block.gating_factor.zero_()
    g = torch.Generator().manual_seed(2)
    x, adapter = (
        torch.randn(1, T, D, generator=g, dtype=torch.float64),
        torch.randn(1, Q, D, generator=g, dtype=torch.float64),
    )
    task_a, task_b = (torch.randn(1, P, D, generator=g, dtype=torch.float64) for _ in range(2))
    assert not torch.allclose(block(x, task_a, adapter), block(x, task_b, adapter))  # values still flow
    torch.testing.assert_close(
        block(x, task_a, adapter), block_reference(block, x, task_a, adapter, True), rtol=1e-6, atol=1e-6
    )


def test_head_composition_and_training_noise():
    head = L1RegressionActionHead(D, action_dim=3, chunk_length=T, num_blocks=2, num_heads=HEADS).double()
    randomize(head)
    g = torch.Generator().manual_seed(3)
    raws = [torch.randn(2, P, D, generator=g, dtype=torch.float64) for _ in range(2)]
    aqs = [torch.randn(2, Q, D, generator=g, dtype=torch.float64) for _ in range(2)]
    proprio = torch.randn(2, 1, D, generator=g, dtype=torch.float64)
    head.eval()
    sd = {k: v for k, v in head.state_dict().items()}
    x = F.layer_norm(
        torch.zeros(2, T, 3 * D, dtype=torch.float64),
        (3 * D,),
        sd["model.layer_norm1.weight"],
        sd["model.layer_norm1.bias"],
    )
    x = torch.relu(x @ sd["model.fc1.weight"].T + sd["model.fc1.bias"])
    for i, block in enumerate(head.model.mlp_resnet_blocks):
        x = block_reference(block, x, raws[i], torch.cat([aqs[i], proprio], dim=1), True)
    x = F.layer_norm(x, (D,), sd["model.layer_norm2.weight"], sd["model.layer_norm2.bias"])
    expected = x @ sd["model.fc2.weight"].T + sd["model.fc2.bias"]
    torch.testing.assert_close(head(raws, aqs, proprio), expected, rtol=1e-6, atol=1e-6)

    head.train()
    same = [r[:1].expand(2, -1, -1) for r in raws], [a[:1].expand(2, -1, -1) for a in aqs]
    noisy = head(*same, proprio[:1].expand(2, -1, -1))
    assert not torch.allclose(noisy[0], head.eval()(*same, proprio[:1].expand(2, -1, -1))[0])
    torch.testing.assert_close(noisy[0], noisy[1])  # one perturbation for the whole batch, as released
