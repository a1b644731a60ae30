"""Per-dataset "standardize" transforms: raw RLDS step fields -> (action, proprio), plus masks.

A `DatasetKind` says how one family of datasets maps to the model's inputs: which image
features are the primary and wrist cameras, how actions and proprio are derived from the
stored fields (applied before statistics and normalisation), and which dims BOUNDS_Q99
normalises. `libero` follows VLA-Adapter (spec section 10); `identity` serves the embedded
suite, whose data is already in the model's convention.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

StepFields = Mapping[str, np.ndarray]


def _identity_action(steps: StepFields) -> np.ndarray:
    return np.asarray(steps["action"], dtype=np.float32)


def _identity_proprio(steps: StepFields) -> np.ndarray | None:
    state = steps.get("observation/state")
    return None if state is None else np.asarray(state, dtype=np.float32)


def libero_action(steps: StepFields) -> np.ndarray:
    """(T, 7) actions with the gripper mapped from -1 open / +1 close to 1 open / 0 close."""
    action = np.asarray(steps["action"], dtype=np.float32)
    gripper = 1 - np.clip(action[..., -1:], 0, 1)
    return np.concatenate([action[..., :6], gripper], axis=-1)


def libero_proprio(steps: StepFields) -> np.ndarray:
    """(T, 8) proprio: EEF position + axis-angle (state[:6]) then the two finger positions (state[-2:])."""
    state = np.asarray(steps["observation/state"], dtype=np.float32)
    return np.concatenate([state[..., :6], state[..., -2:]], axis=-1)


def _all_true(dim: int) -> np.ndarray:
    return np.ones(dim, dtype=bool)


def _all_but_last(dim: int) -> np.ndarray:
    mask = np.ones(dim, dtype=bool)
    mask[-1] = False
    return mask


@dataclass(frozen=True)
class DatasetKind:
    """How a family of datasets becomes (images, action, proprio, instruction).

    `action_fn` / `proprio_fn` take the stacked step fields {"action": (T, A), "observation/state":
    (T, S), ...} and return (T, A') / (T, P) float32 (proprio_fn may return None); the mask
    functions give the BOUNDS_Q99 masks for a dimension.
    """

    name: str
    action_fn: Callable[[StepFields], np.ndarray]
    proprio_fn: Callable[[StepFields], np.ndarray | None]
    action_mask_fn: Callable[[int], np.ndarray] = _all_true
    proprio_mask_fn: Callable[[int], np.ndarray] = _all_true
    image_features: Mapping[str, str] = field(
        default_factory=lambda: {"primary": "observation/image", "wrist": "observation/wrist_image"}
    )
    instruction_feature: str = "language_instruction"


DATASET_KINDS: dict[str, DatasetKind] = {
    "libero": DatasetKind("libero", libero_action, libero_proprio, action_mask_fn=_all_but_last),
    "identity": DatasetKind("identity", _identity_action, _identity_proprio),
}


def get_dataset_kind(kind: str | DatasetKind) -> DatasetKind:
    """A registered kind by name ("libero", "identity"), or `kind` itself."""
    if isinstance(kind, DatasetKind):
        return kind
    if kind not in DATASET_KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; choose one of {sorted(DATASET_KINDS)}")
    return DATASET_KINDS[kind]


def infer_dataset_kind(dataset_name: str) -> DatasetKind:
    """ "libero" for LIBERO datasets (name starts with "libero"), else "identity"."""
    return DATASET_KINDS["libero" if dataset_name.lower().startswith("libero") else "identity"]
