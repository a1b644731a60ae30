"""Action chunks: the current action and the next T-1, repeating the episode's last action."""

from __future__ import annotations

import numpy as np


def chunk_indices(step: int, chunk_len: int, num_steps: int) -> np.ndarray:
    """Step indices of the chunk starting at `step`: (chunk_len,), clamped to the last step."""
    return np.minimum(np.arange(step, step + chunk_len), num_steps - 1)


def action_chunk(actions: np.ndarray, step: int, chunk_len: int) -> np.ndarray:
    """actions (T, A) of one episode -> (chunk_len, A) starting at `step`."""
    return actions[chunk_indices(step, chunk_len, len(actions))]
