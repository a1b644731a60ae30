"""The retention loss: how far the anchor features have drifted from the frozen snapshot's."""

from __future__ import annotations

import torch
from torch import Tensor


def retention_loss(f: Tensor, f_tilde: Tensor, weights: Tensor | None = None) -> Tensor:
    """Mean over the batch of ||f − f~||² summed over features; f, f~ (B, F), computed in float32.

    `weights` (F,): each feature's weight in the sum (the balanced ε mode weighs each part by 1/S_part)."""
    if f.shape != f_tilde.shape:
        raise ValueError(
            f"features {tuple(f.shape)} and snapshot features {tuple(f_tilde.shape)} differ in shape: "
            "the anchor cache was built with other layers, parts or pooling"
        )
    squared = (f.float() - f_tilde.float()).pow(2)
    if weights is not None:
        squared = squared * weights.to(squared.device, torch.float32)
    return squared.sum(dim=-1).mean()
