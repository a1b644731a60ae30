"""The Lagrange multiplier of the drift constraint L_ret <= ε, updated by projected dual ascent."""

from __future__ import annotations

import math
from typing import Any


class DualVariable:
    """λ ← max(0, λ + lr·(L_ret − ε)), optionally capped at `max_value`.

    Plain Python floats: every rank feeds the same all-reduced L_ret, so every rank holds the same λ.
    """

    def __init__(self, epsilon: float, lr: float, init: float = 0.0, max_value: float | None = None) -> None:
        if epsilon < 0 or lr < 0 or init < 0:
            raise ValueError(f"epsilon, lr and init must be >= 0, got {epsilon}, {lr}, {init}")
        self.epsilon = float(epsilon)
        self.lr = float(lr)
        self.max_value = None if max_value is None else float(max_value)
        self.value = float(init)
        self.num_updates = 0

    def update(self, l_ret: float) -> float:
        """One dual step with this optimizer step's retention loss; returns the new λ."""
        if not math.isfinite(l_ret):
            raise FloatingPointError(f"retention loss is {l_ret}: the dual variable cannot be updated")
        value = max(0.0, self.value + self.lr * (float(l_ret) - self.epsilon))
        self.value = value if self.max_value is None else min(value, self.max_value)
        self.num_updates += 1
        return self.value

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value, "num_updates": self.num_updates, "epsilon": self.epsilon, "lr": self.lr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = float(state["value"])
        self.num_updates = int(state["num_updates"])
