"""Read RLDS datasets in the TFDS on-disk layout, without TensorFlow, with random access.

Layout: `<root>/<name>/<version>/` holds `dataset_info.json`, `features.json` and the shards
`<name>-<split>.tfrecord-00000-of-000NN`. Each record is one `tf.train.Example` = one episode;
the features under `steps` are stacked over the episode's steps (see `tfds_features`).

The shards are indexed once (shard, byte offset, length and number of steps of each episode);
the index is cached as JSON (in `cache_dir("rlds_index")` unless told otherwise) and rebuilt when a
shard's size or mtime changes. `get_step(episode, step)` then reads and parses
only that episode's record and decodes only that step's images; the last parsed episodes are
kept. A reader pickles without its open files, so DataLoader workers (fork or spawn) use it.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from craft_vla.data.cache_dir import cache_dir
from craft_vla.data.example_proto import decode_example
from craft_vla.data.image_codec import decode_image
from craft_vla.data.nesting import nest_flat
from craft_vla.data.reader import EpisodeReader
from craft_vla.data.tfds_features import FeatureSpec, read_features_json
from craft_vla.data.tfrecord import RecordSpan, TFRecordError, iter_records, read_record_at

INDEX_FORMAT = 1
SHARD_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"


class RLDSFormatError(ValueError):
    """An RLDS dataset whose files disagree with their own description."""


def resolve_dataset_dir(path: str | Path, name: str | None = None, version: str | None = None) -> Path:
    """The `<name>/<version>/` directory for `path` (already that directory,
    `<root>/<name>` or `<root>` + name).

    Without `version`, the highest version directory that holds a dataset_info.json is taken.
    """
    path = Path(path).expanduser()
    if name is not None:
        path = path / name
    if version is not None:
        path = path / version
    if (path / "dataset_info.json").is_file():
        return path
    versions = sorted(
        (p for p in path.glob("*") if (p / "dataset_info.json").is_file()),
        key=lambda p: tuple(int(x) if x.isdigit() else 0 for x in p.name.split(".")),
    )
    if not versions:
        raise FileNotFoundError(
            f"{path}: no TFDS dataset here: expected dataset_info.json in this directory or in a version "
            "subdirectory such as 1.0.0/ (pass <root>/<dataset name>/<version>)"
        )
    return versions[-1]


def shard_paths(data_dir: Path, info: dict[str, Any], split: str) -> list[Path]:
    """The shard files of `split`, from dataset_info.json's split entry and file-path template."""
    name, file_format = info.get("name"), info.get("fileFormat", "tfrecord")
    splits = {s["name"]: s for s in info.get("splits", [])}
    if split not in splits:
        raise RLDSFormatError(
            f"{data_dir / 'dataset_info.json'}: no split {split!r}; the dataset has {sorted(splits)}"
        )
    if file_format != "tfrecord":
        raise RLDSFormatError(f"{data_dir}: file format {file_format!r} is not supported (only tfrecord)")
    num_shards = len(splits[split].get("shardLengths", []))
    template = splits[split].get("filepathTemplate") or SHARD_TEMPLATE
    paths = [
        data_dir
        / template.replace("{DATASET}", name)
        .replace("{SPLIT}", split)
        .replace("{FILEFORMAT}", file_format)
        .replace("{SHARD_X_OF_Y}", f"{i:05d}-of-{num_shards:05d}")
        .replace("{SHARD_INDEX}", f"{i:05d}")
        .replace("{NUM_SHARDS}", f"{num_shards:05d}")
        for i in range(num_shards)
    ]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{data_dir}: dataset_info.json lists {num_shards} shards, missing files: {missing}"
        )
    return paths


@dataclass
class EpisodeRecord:
    """One parsed episode: typed arrays for tensors, `str` lists for text, encoded bytes for images.

    `values` is keyed by the flat feature name ("steps/action" -> (T, 7) float32,
    "steps/observation/image" -> T JPEG byte strings, "episode_metadata/file_path" -> str).
    """

    num_steps: int
    values: dict[str, Any]


def _typed_tensor(values: Any, spec: FeatureSpec, where: str) -> np.ndarray:
    if isinstance(values, list):
        raise RLDSFormatError(f"{where}: feature {spec.key!r} should hold {spec.dtype} numbers, found bytes")
    if spec.dtype == "bool":
        return values != 0
    return values.astype(spec.dtype, copy=False)


def parse_episode(data: bytes, features: dict[str, FeatureSpec], where: str) -> EpisodeRecord:
    """Parse one serialized episode Example against the dataset's features; `where` names it in errors."""
    raw = decode_example(data)
    values: dict[str, Any] = {}
    num_steps = None
    for spec in features.values():
        if spec.key not in raw:
            raise RLDSFormatError(
                f"{where}: feature {spec.key!r} of features.json is missing from the record"
            )
        value = raw[spec.key]
        if spec.kind in ("image", "text") and not isinstance(value, list):
            raise RLDSFormatError(f"{where}: feature {spec.key!r} should hold encoded bytes, found numbers")
        count = len(value) // spec.values_per_element if spec.values_per_element else 0
        if spec.in_sequence:
            if spec.values_per_element and len(value) % spec.values_per_element:
                raise RLDSFormatError(
                    f"{where}: feature {spec.key!r} has {len(value)} values, not a multiple of its per-step "
                    f"shape {spec.shape} from features.json (wrong dimension?)"
                )
            if num_steps is None:
                num_steps = count
            elif count != num_steps:
                raise RLDSFormatError(
                    f"{where}: feature {spec.key!r} has {count} steps of shape {spec.shape}, other features "
                    f"have {num_steps} (wrong dimension in the data or in features.json?)"
                )
        elif spec.kind == "tensor" and len(value) != spec.values_per_element:
            raise RLDSFormatError(
                f"{where}: feature {spec.key!r} has {len(value)} values, "
                f"features.json declares shape {spec.shape}"
            )
        if spec.kind == "tensor":
            shape = ((num_steps,) if spec.in_sequence else ()) + spec.shape
            value = _typed_tensor(value, spec, where).reshape(shape)
        elif spec.kind == "text":
            value = [v.decode("utf-8") for v in value] if spec.in_sequence else value[0].decode("utf-8")
        elif not spec.in_sequence:
            value = value[0]
        values[spec.key] = value
    return EpisodeRecord(num_steps or 0, values)


class RLDSReader(EpisodeReader):
    """Random access to the episodes and steps of one TFDS/RLDS dataset split.

    `data_dir` is `<root>/<name>/<version>` (or `<root>/<name>`, see `resolve_dataset_dir`).
    Attributes: `name`, `version`, `split`, `features` ({flat key: FeatureSpec}),
    `episode_lengths` (E,) int64, `num_episodes`, `num_steps`.
    """

    def __init__(
        self,
        data_dir: str | Path,
        split: str = "train",
        *,
        index_dir: str | Path | None = None,
        verify_checksums: bool = True,
        episode_cache_size: int = 1,
    ) -> None:
        self.data_dir = resolve_dataset_dir(data_dir)
        info_path = self.data_dir / "dataset_info.json"
        try:
            self.info = json.loads(info_path.read_text())
        except json.JSONDecodeError as e:
            raise RLDSFormatError(f"{info_path}: not valid JSON ({e})") from e
        self.name = self.info.get("name") or self.data_dir.parent.name
        self.version = self.info.get("version", self.data_dir.name)
        self.split = split
        self.features = read_features_json(self.data_dir / "features.json")
        if not any(spec.in_sequence for spec in self.features.values()):
            raise RLDSFormatError(
                f"{self.data_dir / 'features.json'}: no 'steps' sequence; not an RLDS dataset"
            )
        self.shards = shard_paths(self.data_dir, self.info, split)
        self.verify_checksums = verify_checksums
        self.episode_cache_size = episode_cache_size
        self.index_dir = Path(index_dir) if index_dir is not None else cache_dir("rlds_index")
        self._index = self._load_or_build_index()
        self.episode_lengths = self._index["num_steps"]
        self._fds: dict[int, int] = {}
        self._cache: OrderedDict[int, EpisodeRecord] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fds"], state["_cache"] = {}, OrderedDict()
        return state

    def __del__(self) -> None:
        for fd in getattr(self, "_fds", {}).values():
            os.close(fd)

    def fingerprint(self) -> list[dict[str, Any]]:
        """Name, size and mtime of features.json and every shard; a change invalidates caches."""
        files = [self.data_dir / "features.json", *self.shards]
        return [{"name": p.name, "size": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns} for p in files]

    def _index_path(self) -> Path:
        return self.cache_path("index")

    def _load_or_build_index(self) -> dict[str, np.ndarray]:
        path, fingerprint = self._index_path(), self.fingerprint()
        if path.is_file():
            try:
                cached = json.loads(path.read_text())
                if cached.get("format") == INDEX_FORMAT and cached.get("files") == fingerprint:
                    return {k: np.asarray(v, dtype=np.int64) for k, v in cached["episodes"].items()}
            except (json.JSONDecodeError, KeyError, TypeError):
                pass  # an unreadable cache is rebuilt below
        index = self._build_index()
        payload = {
            "format": INDEX_FORMAT,
            "data_dir": str(self.data_dir.resolve()),
            "files": fingerprint,
            "episodes": {k: v.tolist() for k, v in index.items()},
        }
        try:
            self.index_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            tmp.write_text(json.dumps(payload))
            os.replace(tmp, path)
        except OSError as e:  # a read-only cache costs a re-index next time, nothing else
            warnings.warn(
                f"could not cache the RLDS index at {path} ({e}); pass index_dir= to choose a writable place",
                stacklevel=3,
            )
        return index

    def _build_index(self) -> dict[str, np.ndarray]:
        rows = []
        for shard, path in enumerate(self.shards):
            for span, data in iter_records(path, verify=self.verify_checksums):
                record = parse_episode(data, self.features, f"{path}: record at byte offset {span.offset}")
                rows.append((shard, span.offset, span.length, record.num_steps))
        columns = np.asarray(rows, dtype=np.int64).reshape(-1, 4)
        return dict(zip(("shard", "offset", "length", "num_steps"), columns.T.copy()))

    def episode_record(self, episode: int) -> EpisodeRecord:
        """The parsed record of `episode` (images still encoded); the last few are cached."""
        cached = self._cached_record(episode)
        if cached is not None:
            return cached
        if not 0 <= episode < self.num_episodes:
            raise IndexError(f"{self.name}: episode {episode} out of range [0, {self.num_episodes})")
        shard = int(self._index["shard"][episode])
        span = RecordSpan(int(self._index["offset"][episode]), int(self._index["length"][episode]))
        if shard not in self._fds:
            self._fds[shard] = os.open(self.shards[shard], os.O_RDONLY)
        path = self.shards[shard]
        data = read_record_at(self._fds[shard], path, span, verify=self.verify_checksums)
        record = parse_episode(data, self.features, f"{path}: episode {episode} at byte offset {span.offset}")
        return self._remember(episode, record)

    def step_fields(self, episode: int) -> dict[str, Any]:
        """The episode's non-image step features, stacked over steps, keyed without "steps/"
        ({"action": (T, A), "observation/state": (T, S), "language_instruction": [T str], ...})."""
        record = self.episode_record(episode)
        return {
            spec.key.split("/", 1)[1]: record.values[spec.key]
            for spec in self.features.values()
            if spec.in_sequence and spec.kind != "image"
        }

    def _decode_step_image(self, episode: int, step: int, spec: FeatureSpec, data: bytes) -> np.ndarray:
        where = f"{self.shards[int(self._index['shard'][episode])]}: episode {episode} step {step} {spec.key}"
        image = decode_image(data, channels=spec.shape[-1] if spec.shape else 3, where=where)
        if any(d not in (-1, n) for d, n in zip(spec.shape, image.shape)):
            raise RLDSFormatError(
                f"{where}: image decoded to shape {image.shape}, features.json declares {spec.shape}"
            )
        return image

    def step_image(self, episode: int, step: int, key: str) -> np.ndarray:
        """One decoded image, uint8 (H, W, C); `key` is the step feature ("observation/image")."""
        spec = self.features.get(f"steps/{key}")
        if spec is None or spec.kind != "image":
            images = [
                k.split("/", 1)[1] for k, s in self.features.items() if s.kind == "image" and s.in_sequence
            ]
            raise KeyError(
                f"{self.data_dir}: no image feature {key!r} in the steps; image features: {images}"
            )
        record = self.episode_record(episode)
        if not 0 <= step < record.num_steps:
            raise IndexError(
                f"{self.name}: step {step} out of range [0, {record.num_steps}) of episode {episode}"
            )
        return self._decode_step_image(episode, step, spec, record.values[spec.key][step])

    def get_step(self, episode: int, step: int) -> dict[str, Any]:
        """One step as a nested dict ({"observation": {"image": (H, W, 3) uint8, ...}, "action": ...})
        plus the episode's metadata under "episode_metadata"."""
        record = self.episode_record(episode)
        if not 0 <= step < record.num_steps:
            raise IndexError(
                f"{self.name}: step {step} out of range [0, {record.num_steps}) of episode {episode}"
            )
        flat = {}
        for spec in self.features.values():
            value = record.values[spec.key]
            if not spec.in_sequence:
                flat[spec.key] = value
            elif spec.kind == "image":
                flat[spec.key.split("/", 1)[1]] = self._decode_step_image(episode, step, spec, value[step])
            else:
                flat[spec.key.split("/", 1)[1]] = value[step]
        return nest_flat(flat)

    def read_episode(self, episode: int, decode_images: bool = True) -> dict[str, Any]:
        """A whole episode as {"steps": {...stacked over T...}, "episode_metadata": {...}}.

        Images become uint8 (T, H, W, C) arrays (or stay lists of encoded bytes without
        `decode_images`); text becomes lists of str. This is the format `write_rlds_dataset` takes.
        """
        record = self.episode_record(episode)
        flat = dict(record.values)
        for spec in self.features.values():
            if spec.kind == "image" and decode_images:
                images = flat[spec.key] if spec.in_sequence else [flat[spec.key]]
                decoded = [self._decode_step_image(episode, t, spec, b) for t, b in enumerate(images)]
                flat[spec.key] = np.stack(decoded) if spec.in_sequence else decoded[0]
        return nest_flat(flat)


__all__ = [
    "EpisodeRecord",
    "RLDSFormatError",
    "RLDSReader",
    "TFRecordError",
    "parse_episode",
    "resolve_dataset_dir",
    "shard_paths",
]
