"""Which kernel computes attention: PyTorch's fused SDPA (the default) or plain matmuls and a softmax.

Both compute the same maths. The choice is a speed one: on a CPU under bf16 autocast, SDPA's fused
backward is several times slower than the matmuls at the demo's sizes (`benchmarks/cpu_precision.py`),
so the trainer switches to matmuls there (`training.setup.place_model`).
"""

from __future__ import annotations

from torch import nn
from transformers import PreTrainedModel


def set_matmul_attention(model: nn.Module) -> None:
    """Compute attention as softmax(q kᵀ / √d) v with explicit matmuls in every Qwen2
    and timm block of `model`."""
    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            module.set_attn_implementation("eager")
        if hasattr(module, "fused_attn"):  # timm's Attention reads this flag on every forward
            module.fused_attn = False
