"""The one place that knows the dataset formats: RLDS (TFDS layout) and LeRobot v3, chosen by the layout.

`open_reader` returns an `RLDSReader` or a `LeRobotReader`; both have the same interface (episodes, steps,
`step_fields`, `step_image`, `fingerprint`, `cache_path`), so datasets, statistics, the anchor cache and the
inspector use either without asking which.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from craft_vla.data.lerobot import LeRobotReader, is_lerobot_root
from craft_vla.data.normalize import DatasetStatistics
from craft_vla.data.rlds import RLDSReader, resolve_dataset_dir
from craft_vla.data.statistics import compute_dataset_statistics
from craft_vla.data.transforms import DatasetKind, get_dataset_kind

DATASET_FORMATS = ("auto", "rlds", "lerobot")
Reader = RLDSReader | LeRobotReader


def detect_format(path: str | Path) -> str:
    """The format of the dataset at `path`: lerobot with meta/info.json, rlds with dataset_info.json (in it or
    in a version subdirectory); an error naming both layouts otherwise."""
    path = Path(path).expanduser()
    if is_lerobot_root(path):
        return "lerobot"
    try:
        resolve_dataset_dir(path)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}; or a LeRobot v3 root: the directory that holds meta/info.json") from e
    return "rlds"


def open_reader(
    path: str | Path,
    split: str = "train",
    *,
    dataset_format: str = "auto",
    lerobot_features: str | Mapping[str, str] | None = None,
    index_dir: str | Path | None = None,
) -> Reader:
    """A reader of the dataset at `path` in `dataset_format` (auto: by its layout)."""
    if dataset_format not in DATASET_FORMATS:
        raise ValueError(f"--dataset_format must be one of {DATASET_FORMATS}, got {dataset_format!r}")
    chosen = detect_format(path) if dataset_format == "auto" else dataset_format
    if chosen == "lerobot":
        return LeRobotReader(path, split, features=lerobot_features, index_dir=index_dir)
    return RLDSReader(path, split, index_dir=index_dir)


def reader_statistics(reader: Reader, kind: str | DatasetKind) -> DatasetStatistics:
    """The action/proprio statistics of a reader's split: a LeRobot dataset's meta/stats.json where it holds
    exactly what is normalised (`LeRobotReader.stats_json_statistics`), computed from the steps otherwise."""
    kind = get_dataset_kind(kind)
    if isinstance(reader, LeRobotReader):
        stats = reader.stats_json_statistics(kind)
        if stats is not None:
            return stats
    return compute_dataset_statistics(reader, kind)


def reader_format(reader: Reader) -> dict[str, Any]:
    """What the anchor cache's fingerprint records of a dataset's format: the format, and for LeRobot the
    feature map (which camera is which)."""
    if isinstance(reader, LeRobotReader):
        return {"format": "lerobot", "features": dict(reader.feature_map)}
    return {"format": "rlds"}
