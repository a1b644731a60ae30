"""BOUNDS_Q99 normalisation of actions and proprio, and VLA-Adapter's `dataset_statistics.json`.

    normalize:   y = clip(2 (x - q01) / (q99 - q01 + 1e-8) - 1, -1, 1)   on dims where mask is true
    unnormalize: x = 0.5 (y + 1) (q99 - q01 + 1e-8) + q01                  on dims where mask is true
Dims whose statistics have min == max are set to 0 after normalising (VLA-Adapter does so for
unused action dims, masked or not). Arithmetic is float32, as in the original TF pipeline.

`dataset_statistics.json` maps dataset names to
    {"action": {"mean", "std", "max", "min", "q01", "q99", "mask"}, "proprio": {... same ...},
     "num_transitions": int, "num_trajectories": int}.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

EPS = 1e-8
_STAT_KEYS = ("mean", "std", "max", "min", "q01", "q99")


class StatisticsError(ValueError):
    """Missing or inconsistent normalisation statistics."""


@dataclass(frozen=True)
class NormStats:
    """Per-dimension statistics of one quantity (action or proprio), each (D,) float32; mask (D,) bool."""

    mean: np.ndarray
    std: np.ndarray
    max: np.ndarray
    min: np.ndarray
    q01: np.ndarray
    q99: np.ndarray
    mask: np.ndarray

    @property
    def dim(self) -> int:
        return len(self.q01)

    def to_json(self) -> dict[str, list]:
        out: dict[str, list] = {k: [float(v) for v in getattr(self, k)] for k in _STAT_KEYS}
        out["mask"] = [bool(v) for v in self.mask]
        return out

    @classmethod
    def from_json(cls, entry: Mapping[str, Any], where: str) -> NormStats:
        missing = [k for k in ("min", "max", "q01", "q99") if k not in entry]
        if missing:
            raise StatisticsError(f"{where}: missing statistics {missing} (found {sorted(entry)})")
        arrays = {k: np.asarray(entry.get(k, entry["q01"]), dtype=np.float32) for k in _STAT_KEYS}
        mask = np.asarray(entry.get("mask", np.ones(len(arrays["q01"]), dtype=bool)), dtype=bool)
        if len({len(a) for a in (*arrays.values(), mask)}) != 1:
            raise StatisticsError(
                f"{where}: statistics have different lengths: { {k: len(v) for k, v in entry.items()} }"
            )
        return cls(mask=mask, **arrays)


@dataclass(frozen=True)
class DatasetStatistics:
    """The statistics of one dataset: action, proprio (or None) and counts."""

    action: NormStats
    proprio: NormStats | None
    num_transitions: int
    num_trajectories: int

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.action.to_json()}
        if self.proprio is not None:
            out["proprio"] = self.proprio.to_json()
        out["num_transitions"] = int(self.num_transitions)
        out["num_trajectories"] = int(self.num_trajectories)
        return out

    @classmethod
    def from_json(cls, entry: Mapping[str, Any], where: str) -> DatasetStatistics:
        if "action" not in entry:
            raise StatisticsError(f"{where}: no 'action' statistics (found {sorted(entry)})")
        return cls(
            action=NormStats.from_json(entry["action"], f"{where}/action"),
            proprio=NormStats.from_json(entry["proprio"], f"{where}/proprio") if "proprio" in entry else None,
            num_transitions=int(entry.get("num_transitions", 0)),
            num_trajectories=int(entry.get("num_trajectories", 0)),
        )


def compute_norm_stats(values: np.ndarray, mask: np.ndarray | None = None) -> NormStats:
    """Statistics over all transitions: values (N, D) -> NormStats (computed in float64, stored float32).

    std is the population standard deviation; q01/q99 are numpy's linear-interpolated quantiles.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise StatisticsError(f"statistics need values of shape (N, D) with N > 0, found {x.shape}")
    mask = np.ones(x.shape[1], dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != (x.shape[1],):
        raise StatisticsError(f"mask has shape {mask.shape}, expected ({x.shape[1]},)")
    q01, q99 = np.quantile(x, [0.01, 0.99], axis=0)
    stats = dict(mean=x.mean(0), std=x.std(0), max=x.max(0), min=x.min(0), q01=q01, q99=q99)
    return NormStats(mask=mask, **{k: v.astype(np.float32) for k, v in stats.items()})


def normalize_bounds_q99(x: np.ndarray, stats: NormStats) -> np.ndarray:
    """BOUNDS_Q99 normalisation of x (..., D) float -> (..., D) float32 (see module docstring)."""
    x = np.asarray(x, dtype=np.float32)
    if x.shape[-1] != stats.dim:
        raise StatisticsError(f"values have {x.shape[-1]} dims, the statistics have {stats.dim}")
    scaled = np.clip(2 * (x - stats.q01) / (stats.q99 - stats.q01 + np.float32(EPS)) - 1, -1, 1)
    out = np.where(stats.mask, scaled, x)
    return np.where(stats.min == stats.max, np.float32(0), out).astype(np.float32)


def unnormalize_bounds_q99(y: Any, stats: NormStats) -> Any:
    """Inverse of BOUNDS_Q99 on masked dims; y (..., D) numpy array or torch tensor (same type back)."""
    if type(y).__module__.startswith("torch"):
        import torch

        as_tensor = {k: torch.as_tensor(getattr(stats, k), device=y.device) for k in ("q01", "q99", "mask")}
        x = 0.5 * (y + 1) * (as_tensor["q99"] - as_tensor["q01"] + EPS).to(y.dtype) + as_tensor["q01"].to(
            y.dtype
        )
        return torch.where(as_tensor["mask"], x, y)
    y = np.asarray(y, dtype=np.float32)
    x = np.float32(0.5) * (y + 1) * (stats.q99 - stats.q01 + np.float32(EPS)) + stats.q01
    return np.where(stats.mask, x, y)


def save_dataset_statistics(path: str | os.PathLike, statistics: Mapping[str, DatasetStatistics]) -> Path:
    """Write {dataset name: DatasetStatistics} as VLA-Adapter's dataset_statistics.json (atomically)."""
    path = Path(path)
    if path.is_dir():
        path = path / "dataset_statistics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({name: s.to_json() for name, s in statistics.items()}, indent=2))
    os.replace(tmp, path)
    return path


def load_dataset_statistics(path: str | os.PathLike) -> dict[str, DatasetStatistics]:
    """Read a dataset_statistics.json (a file, or a checkpoint directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "dataset_statistics.json"
    if not path.is_file():
        raise StatisticsError(f"{path} not found: expected VLA-Adapter's dataset_statistics.json")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise StatisticsError(f"{path}: not valid JSON ({e})") from e
    return {
        name: DatasetStatistics.from_json(entry, f"{path}: dataset {name!r}") for name, entry in raw.items()
    }


def statistics_for(
    statistics: Mapping[str, DatasetStatistics], name: str, source: str = "statistics"
) -> DatasetStatistics:
    """`statistics[name]` with an error that lists what is there when it is missing."""
    if name not in statistics:
        raise StatisticsError(
            f"{source}: no statistics for dataset {name!r}; found {sorted(statistics)} "
            "(compute them with compute_dataset_statistics or pass the run's dataset_statistics.json)"
        )
    return statistics[name]
