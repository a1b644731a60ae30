"""The policy: VLA-Adapter's L1-regression MLP-ResNet whose blocks attend to the bridge conditions.

Block i reads layer i + 1: its "task" source is the raw latent C_R (B, P, D), its "adapter" source the
action-query latent C_AQ (B, Q, D) followed by the proprio token. Numerics follow the released code
(spec section 11), including its rotary layout, so released heads give the same actions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


def rotate_pairs(x: Tensor) -> Tensor:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...) on the last axis."""
    return torch.stack((-x[..., 1::2], x[..., 0::2]), dim=-1).flatten(-2)


def rotary_tables(
    length: int, head_dim: int, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """cos, sin (length, head_dim) of the angles [p·f, p·f] with f the head_dim/2
    inverse frequencies base 10000."""
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv_freq.to(device))
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: Tensor, dtype: torch.dtype) -> Tensor:
    """Rotate (B, H, L, hd) by positions 0..L-1 (tables cast to `dtype`, as the released code does)."""
    cos, sin = rotary_tables(x.shape[-2], x.shape[-1], x.device, dtype)
    return x * cos + rotate_pairs(x) * sin


class BridgeBlockBase(nn.Module):
    """What both block versions share: query/output projections, the task gate, the FFN
    with the residual inside."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.ffn = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.ReLU())
        self.q_proj = nn.Linear(dim, dim)
        self.o_proj = nn.Linear(dim, dim)
        self.gating_factor = nn.Parameter(torch.zeros(1))

    def heads(self, x: Tensor) -> Tensor:
        """(B, L, D) -> (B, H, L, hd)."""
        return x.reshape(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def attend(self, x: Tensor, q: Tensor, keys: Sequence[Tensor], values: Sequence[Tensor]) -> Tensor:
        """One softmax over [self, adapter, tanh(g)·task] scores, then o_proj and x <- FFN(o + x)."""
        scores = [q @ k.transpose(-2, -1) for k in keys]
        scores[2] = scores[2] * torch.tanh(self.gating_factor)
        weights = torch.softmax(torch.cat(scores, dim=-1) / math.sqrt(self.head_dim), dim=-1)
        out = (weights @ torch.cat(list(values), dim=2)).transpose(1, 2).reshape(x.shape)
        return self.ffn(self.o_proj(out) + x)


class ProBridgeBlock(BridgeBlockBase):
    """The Pro block: separate K/V per source, rotary embedding on queries and keys."""

    def __init__(self, dim: int, num_heads: int = 8) -> None:
        super().__init__(dim, num_heads)
        self.k_self = nn.Linear(dim, dim)
        self.v_self = nn.Linear(dim, dim)
        self.k_adapter = nn.Linear(dim, dim)
        self.v_adapter = nn.Linear(dim, dim)
        self.k_task = nn.Linear(dim, dim)
        self.v_task = nn.Linear(dim, dim)
        self.film_gen = nn.Sequential(nn.Linear(dim, 2 * dim))  # in the checkpoints, never called

    def forward(self, x: Tensor, task: Tensor, adapter: Tensor) -> Tensor:
        """x (B, T, D), task (B, P, D), adapter (B, Q(+1), D) -> (B, T, D)."""
        q = apply_rotary(self.heads(self.q_proj(x)), x.dtype)
        keys = [
            apply_rotary(self.heads(self.k_self(x)), x.dtype),
            apply_rotary(self.heads(self.k_adapter(adapter)), x.dtype),
            apply_rotary(self.heads(self.k_task(task)), x.dtype),
        ]
        values = [
            self.heads(self.v_self(x)),
            self.heads(self.v_adapter(adapter)),
            self.heads(self.v_task(task)),
        ]
        return self.attend(x, q, keys, values)


class BridgeBlock(BridgeBlockBase):
    """The original block: one K/V projection shared by all sources, no rotary embedding."""

    def __init__(self, dim: int, num_heads: int = 8) -> None:
        super().__init__(dim, num_heads)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, task: Tensor, adapter: Tensor) -> Tensor:
        """x (B, T, D), task (B, P, D), adapter (B, Q(+1), D) -> (B, T, D)."""
        sources = (x, adapter, task)
        keys = [self.heads(self.k_proj(s)) for s in sources]
        values = [self.heads(self.v_proj(s)) for s in sources]
        return self.attend(x, self.heads(self.q_proj(x)), keys, values)


class MLPResNet(nn.Module):
    """LayerNorm(A·D), fc1 -> D, ReLU, one bridge block per LLM layer, LayerNorm(D), fc2 -> A."""

    def __init__(
        self, num_blocks: int, input_dim: int, hidden_dim: int, output_dim: int, pro: bool, num_heads: int
    ):
        super().__init__()
        block = ProBridgeBlock if pro else BridgeBlock
        self.layer_norm1 = nn.LayerNorm(input_dim)
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.relu = nn.ReLU()
        self.mlp_resnet_blocks = nn.ModuleList([block(hidden_dim, num_heads) for _ in range(num_blocks)])
        self.layer_norm2 = nn.LayerNorm(hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: Tensor, tasks: Sequence[Tensor], adapters: Sequence[Tensor]) -> Tensor:
        """x (B, T, A·D); tasks[i], adapters[i] are the sources of block i -> (B, T, A)."""
        x = self.relu(self.fc1(self.layer_norm1(x)))
        for block, task, adapter in zip(self.mlp_resnet_blocks, tasks, adapters, strict=True):
            x = block(x, task, adapter)
        return self.fc2(self.layer_norm2(x))


class L1RegressionActionHead(nn.Module):
    """Predicts an action chunk (B, T, A) from the bridge conditions of layers 1..L and the proprio token."""

    def __init__(
        self,
        hidden_dim: int,
        action_dim: int,
        chunk_length: int,
        num_blocks: int,
        use_pro_version: bool = True,
        num_heads: int = 8,
        input_noise_std: float = 0.02,
    ) -> None:
        super().__init__()
        self.action_dim = action_dim
        self.chunk_length = chunk_length
        self.input_noise_std = input_noise_std
        self.model = MLPResNet(
            num_blocks, action_dim * hidden_dim, hidden_dim, action_dim, use_pro_version, num_heads
        )

    def forward(
        self, raw_latents: Sequence[Tensor], aq_latents: Sequence[Tensor], proprio: Tensor | None
    ) -> Tensor:
        """raw_latents[i] (B, P, D) and aq_latents[i] (B, Q, D) of layer i + 1; proprio (B, 1, D) or None.

        The head's input is zeros (B, T, A·D); in training mode VLA-Adapter adds fresh Gaussian noise
        (std `input_noise_std`, shared across the batch) on every forward, and so do we.
        """
        first = aq_latents[0]
        x = first.new_zeros(first.shape[0], self.chunk_length, self.action_dim * first.shape[-1])
        if self.training and self.input_noise_std > 0:
            x = x + torch.randn(x.shape[1:], device=x.device, dtype=x.dtype) * self.input_noise_std
        adapters = [aq if proprio is None else torch.cat([aq, proprio], dim=1) for aq in aq_latents]
        return self.model(x, raw_latents, adapters)
