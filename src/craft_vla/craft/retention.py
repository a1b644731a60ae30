"""The retention loss: how far the anchor features have drifted from the frozen snapshot's."""

from __future__ import annotations

from torch import Tensor


def retention_loss(f: Tensor, f_tilde: Tensor) -> Tensor:
    """Mean over the batch of ||f − f~||² summed over features; f, f~ (B, F), computed in float32."""
    if f.shape != f_tilde.shape:
        raise ValueError(
            f"features {tuple(f.shape)} and snapshot features {tuple(f_tilde.shape)} differ in shape: "
            "the anchor cache was built with other layers, parts or pooling"
        )
    return (f.float() - f_tilde.float()).pow(2).sum(dim=-1).mean()
