"""Stable sample ids: (dataset, episode, step) packed into one int64.

`sample_id = (dataset << 48) | (episode << 20) | step` (docs/interfaces.md): up to 2^15
datasets, 2^28 episodes per dataset and 2^20 steps per episode. The functions accept Python
ints, numpy integer arrays and torch int64 tensors alike (only shifts, masks and comparisons
are used), so whole batches of ids are packed or unpacked at once.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

DATASET_BITS = 15
EPISODE_BITS = 28
STEP_BITS = 20
EPISODE_SHIFT = STEP_BITS
DATASET_SHIFT = STEP_BITS + EPISODE_BITS
MAX_DATASETS = 1 << DATASET_BITS
MAX_EPISODES = 1 << EPISODE_BITS
MAX_STEPS = 1 << STEP_BITS


def pack_sample_id(dataset: Any, episode: Any, step: Any) -> Any:
    """Pack (dataset, episode, step) into int64 sample ids; elementwise on arrays/tensors.

    Python ints give a Python int; numpy inputs give numpy int64; torch inputs give torch int64.
    """
    if all(isinstance(v, numbers.Integral) for v in (dataset, episode, step)):
        dataset, episode, step = int(dataset), int(episode), int(step)
    else:
        use_torch = any(_is_torch(v) for v in (dataset, episode, step))
        dataset, episode, step = (_as_int64(v, use_torch) for v in (dataset, episode, step))
    _check_range("dataset index", dataset, MAX_DATASETS)
    _check_range("episode index", episode, MAX_EPISODES)
    _check_range("step index", step, MAX_STEPS)
    return (dataset << DATASET_SHIFT) | (episode << EPISODE_SHIFT) | step


def unpack_sample_id(sample_id: Any) -> tuple[Any, Any, Any]:
    """Inverse of `pack_sample_id`: (dataset, episode, step), elementwise on arrays/tensors."""
    if isinstance(sample_id, numbers.Integral):
        sample_id = int(sample_id)
    else:
        sample_id = _as_int64(sample_id, _is_torch(sample_id))
    _check_range("sample id", sample_id, 1 << 63)
    dataset = sample_id >> DATASET_SHIFT
    episode = (sample_id >> EPISODE_SHIFT) & (MAX_EPISODES - 1)
    step = sample_id & (MAX_STEPS - 1)
    return dataset, episode, step


def _is_torch(value: Any) -> bool:
    return type(value).__module__.startswith("torch")


def _as_int64(value: Any, use_torch: bool) -> Any:
    """An int64 torch tensor (when `use_torch`) or numpy array holding `value`."""
    if use_torch:
        import torch

        return torch.as_tensor(value, dtype=torch.int64)
    return np.asarray(value, dtype=np.int64)


def _check_range(name: str, value: Any, limit: int) -> None:
    if isinstance(value, int):
        low = high = value
    elif value.numel() if hasattr(value, "numel") else value.size:
        low, high = int(value.min()), int(value.max())
    else:
        return
    if low < 0 or high >= limit:
        raise ValueError(
            f"{name} must be in [0, {limit}) to fit a sample id; found values in [{low}, {high}]"
        )


def sample_ids_for_episodes(dataset: int, episode_lengths: Any) -> np.ndarray:
    """All sample ids of one dataset in storage order: episode_lengths (E,) -> int64 (sum of lengths,)."""
    lengths = np.asarray(episode_lengths, dtype=np.int64)
    episodes = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    steps = np.arange(lengths.sum(), dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return pack_sample_id(np.full_like(steps, dataset), episodes, steps)
