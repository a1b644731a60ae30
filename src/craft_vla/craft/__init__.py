"""CRaFT, model-agnostic: anchor features, retention loss, conflict-aware projection, dual variable.

Imports only torch and the standard library.
"""

from craft_vla.craft.dual import DualVariable
from craft_vla.craft.features import AnchorSpec, HiddenStateHooks, anchor_features, pool_tokens
from craft_vla.craft.geometry import (
    combine_in_place,
    conflict_coefficient,
    gradient_inner_products,
    project_conflicting,
)
from craft_vla.craft.retention import retention_loss
from craft_vla.craft.step import CraftStats, CraftStep, accumulate_backward

__all__ = [
    "AnchorSpec",
    "CraftStats",
    "CraftStep",
    "DualVariable",
    "HiddenStateHooks",
    "accumulate_backward",
    "anchor_features",
    "combine_in_place",
    "conflict_coefficient",
    "gradient_inner_products",
    "pool_tokens",
    "project_conflicting",
    "retention_loss",
]
