"""The two small MLPs: fused patch features -> LLM width, and proprio -> one LLM-width token
for the policy."""

from __future__ import annotations

from torch import Tensor, nn


class FusedGELUProjector(nn.Module):
    """Prismatic's "fused-gelu-mlp": fc1 (C -> 4C), GELU, fc2 (4C -> D), GELU, fc3 (D -> D)."""

    def __init__(self, vision_dim: int, hidden_size: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
        self.fc2 = nn.Linear(4 * vision_dim, hidden_size)
        self.fc3 = nn.Linear(hidden_size, hidden_size)
        self.act_fn = nn.GELU()

    def forward(self, patches: Tensor) -> Tensor:
        """(B, P, C) -> (B, P, D)."""
        return self.fc3(self.act_fn(self.fc2(self.act_fn(self.fc1(patches)))))


class ProprioProjector(nn.Module):
    """fc1 (proprio_dim -> D), GELU, fc2 (D -> D)."""

    def __init__(self, proprio_dim: int, hidden_size: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(proprio_dim, hidden_size)
        self.act_fn = nn.GELU()
        self.fc2 = nn.Linear(hidden_size, hidden_size)

    def forward(self, proprio: Tensor) -> Tensor:
        """(B, proprio_dim) -> (B, D)."""
        return self.fc2(self.act_fn(self.fc1(proprio)))
