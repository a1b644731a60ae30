"""Action/proprio statistics of an RLDS dataset, computed once over all transitions and cached."""

from __future__ import annotations

import json
import os

import numpy as np

from craft_vla.data.normalize import DatasetStatistics, compute_norm_stats
from craft_vla.data.rlds import RLDSReader
from craft_vla.data.transforms import DatasetKind, get_dataset_kind


def compute_dataset_statistics(
    reader: RLDSReader, kind: str | DatasetKind, use_cache: bool = True
) -> DatasetStatistics:
    """Statistics of the transformed actions and proprio over every step of `reader`'s split.

    Cached beside the reader's index (keyed by the dataset kind; invalidated when the shards change).
    """
    kind = get_dataset_kind(kind)
    cache = reader.cache_path(f"statistics-{kind.name}")
    if use_cache and cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("files") == reader.fingerprint():
            return DatasetStatistics.from_json(cached["statistics"], str(cache))
    actions, proprios = [], []
    for episode in range(reader.num_episodes):
        fields = reader.step_fields(episode)
        actions.append(require_finite(kind.action_fn(fields), "action", reader, episode))
        proprio = kind.proprio_fn(fields)
        if proprio is not None:
            proprios.append(require_finite(proprio, "proprio", reader, episode))
    action = np.concatenate(actions)
    stats = DatasetStatistics(
        action=compute_norm_stats(action, kind.action_mask_fn(action.shape[-1])),
        proprio=compute_norm_stats(np.concatenate(proprios), kind.proprio_mask_fn(proprios[0].shape[-1]))
        if proprios
        else None,
        num_transitions=len(action),
        num_trajectories=reader.num_episodes,
    )
    if use_cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"files": reader.fingerprint(), "statistics": stats.to_json()}))
        os.replace(tmp, cache)
    return stats


def require_finite(values: np.ndarray, name: str, reader: RLDSReader, episode: int) -> np.ndarray:
    """`values` (T, D) of one episode, or an error naming the first non-finite step: one NaN would make
    the statistics, every normalised sample and so the whole run NaN."""
    bad = ~np.isfinite(np.asarray(values, dtype=np.float64))
    if bad.any():
        step, dim = (int(i[0]) for i in np.nonzero(bad))
        raise ValueError(
            f"{reader.data_dir}: episode {episode}, step {step}: {name}[{dim}] is {values[step][dim]}; the "
            f"{name}s must be finite: fix or drop this episode ({int(bad.any(axis=-1).sum())} steps affected)"
        )
    return values
