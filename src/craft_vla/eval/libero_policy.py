"""What the LIBERO evaluation asks of a policy, stand-in policies, and the checks a checkpoint must pass.

A policy (`craft_vla.eval.closed_loop.ChunkPolicy`) maps a batch of observations to action chunks
in environment units (unnormalised), with the gripper still in the training convention ([0, 1],
1 = open): the evaluation maps the gripper for the environment. The policy applies its own training
preprocessing (resize, centre crop, normalisation). Each observation is a dict with

    full_image   (R, R, 3) uint8  agent-view camera (R = 256), rotated 180°, JPEG round trip: a stored frame
    wrist_image  (R, R, 3) uint8  wrist camera, same processing
    state        (8,) float       EEF position, axis-angle, two gripper finger positions (unnormalised)
    instruction  str              the task's language instruction
    suite, task_index, trial, step  the episode and the policy step (for deterministic stand-ins)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from craft_vla.data.normalize import DatasetStatistics
from craft_vla.eval.protocol import base_suite

LIBERO_ACTION_DIM = 7
LIBERO_PROPRIO_DIM = 8


class ReplayChunkPolicy:
    """Replays a fixed (L, A) action sequence: the chunk at policy step t is rows t .. t+T−1.

    Rows past the end repeat the last one. Deterministic per episode, whatever the batch.
    """

    def __init__(self, actions: np.ndarray, chunk_length: int = 8) -> None:
        self.actions = np.asarray(actions, dtype=np.float64)
        if self.actions.ndim != 2 or len(self.actions) == 0:
            raise ValueError(f"replay actions must be a non-empty (L, A) array, got {self.actions.shape}")
        self.chunk_length = chunk_length

    def predict_chunks(self, observations: list[dict[str, Any]]) -> np.ndarray:
        last = len(self.actions) - 1
        steps = [obs["step"] for obs in observations]
        rows = [np.minimum(np.arange(step, step + self.chunk_length), last) for step in steps]
        return np.stack([self.actions[r] for r in rows])


class RandomChunkPolicy:
    """Uniform random actions in [−scale, scale] (gripper in [0, 1]), seeded per (seed, task, trial, step).

    The plumbing check that needs no checkpoint; like any random policy it should never succeed.
    """

    def __init__(self, seed: int = 7, chunk_length: int = 8, action_dim: int = 7, scale: float = 0.5) -> None:
        self.seed, self.chunk_length, self.action_dim, self.scale = seed, chunk_length, action_dim, scale

    def predict_chunks(self, observations: list[dict[str, Any]]) -> np.ndarray:
        chunks = []
        for obs in observations:
            rng = np.random.default_rng([self.seed, obs["task_index"], obs["trial"], obs["step"]])
            chunk = rng.uniform(-self.scale, self.scale, size=(self.chunk_length, self.action_dim))
            chunk[:, -1] = rng.uniform(0.0, 1.0, size=self.chunk_length)
            chunks.append(chunk)
        return np.stack(chunks)


def resolve_unnorm_key(statistics: dict[str, Any], suite: str, unnorm_key: str | None = None) -> str:
    """Which dataset's statistics unnormalise the actions for `suite`.

    An explicit `unnorm_key` wins; otherwise the suite's base LIBERO dataset (`libero_spatial` or
    `libero_spatial_no_noops` for every `libero_spatial*` suite). A checkpoint trained on another
    dataset is refused: its statistics would silently rescale the actions.
    """
    if unnorm_key is not None:
        if unnorm_key not in statistics:
            raise KeyError(
                f"--unnorm_key {unnorm_key!r} is not in the checkpoint's statistics {sorted(statistics)}"
            )
        return unnorm_key
    base = base_suite(suite) or suite
    for key in (base, f"{base}_no_noops"):
        if key in statistics:
            return key
    raise ValueError(
        f"the checkpoint's dataset statistics cover {sorted(statistics)}, not the {base!r} data that suite "
        f"{suite!r} needs ({base!r} or '{base}_no_noops'); evaluate a checkpoint fine-tuned on {base}, "
        "or pass "
        "--unnorm_key to choose its statistics deliberately"
    )


def check_fits_libero(statistics: DatasetStatistics, action_dim: int, use_proprio: bool) -> None:
    """Refuse a model or statistics whose action (or proprio) size does not fit LIBERO (7 and 8)."""
    action = "6 delta EEF dims + gripper"
    sizes = [
        ("the model's action dimension", action_dim, LIBERO_ACTION_DIM, action),
        ("the action statistics", statistics.action.dim, LIBERO_ACTION_DIM, action),
    ]
    if use_proprio:
        found = statistics.proprio.dim if statistics.proprio is not None else 0
        sizes.append(
            ("the proprio statistics", found, LIBERO_PROPRIO_DIM, "EEF position, axis-angle, 2 fingers")
        )
    for what, found, expected, meaning in sizes:
        if found != expected:
            raise ValueError(
                f"{what} has size {found}; LIBERO needs {expected} ({meaning}): "
                "evaluate a checkpoint fine-tuned on a LIBERO dataset"
            )
