"""Write RLDS datasets in the exact TFDS on-disk layout (what `tfds.builder_from_directory` reads).

An episode is a nested dict (the format `RLDSReader.read_episode` returns):

    {"steps": {"observation": {"image": uint8 (T, H, W, 3), "wrist_image": uint8 (T, H, W, 3),
                               "state": float32 (T, S), ...},
               "action": float32 (T, A),
               "language_instruction": str (the same for every step) or list[str] (T),
               "reward": float32 (T,), "discount": float32 (T,),
               "is_first": bool (T,), "is_last": bool (T,), "is_terminal": bool (T,)},
     "episode_metadata": {"file_path": str}}

Sizes come from the data. uint8 arrays (T, H, W, C) under `steps` are stored as JPEG (or PNG)
images; strings as Text; other arrays as Tensor/Scalar features with their dtype. The dataset is
written into a temporary directory and renamed to `<root>/<name>/<version>/` when complete.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sized
from pathlib import Path
from typing import Any

import numpy as np

from craft_vla.data.example_proto import encode_example
from craft_vla.data.image_codec import encode_image
from craft_vla.data.nesting import flatten_nested
from craft_vla.data.tfds_features import FeatureSpec, features_to_json
from craft_vla.data.tfrecord import frame_record

SHARD_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"


def _is_text(value: Any) -> bool:
    if isinstance(value, str):
        return True
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(isinstance(v, str) for v in value)


def infer_features(episode: Mapping[str, Any], image_format: str = "jpeg") -> dict[str, FeatureSpec]:
    """Feature specs for episodes shaped like `episode` (see the module docstring)."""
    specs = {}
    for key, value in sorted(flatten_nested(episode).items()):
        in_sequence = key.startswith("steps/")
        if not in_sequence and not key.startswith("episode_metadata/"):
            raise ValueError(
                f"episode key {key!r}: expected everything under 'steps/' or 'episode_metadata/'"
            )
        if _is_text(value):
            specs[key] = FeatureSpec(key, "text", "string", (), in_sequence)
            continue
        array = np.asarray(value)
        shape = array.shape[1:] if in_sequence else array.shape
        if in_sequence and array.dtype == np.uint8 and array.ndim == 4 and array.shape[-1] in (1, 3, 4):
            specs[key] = FeatureSpec(key, "image", "uint8", shape, True, image_format)
        elif array.dtype.kind in "biuf":
            specs[key] = FeatureSpec(key, "tensor", array.dtype.name, shape, in_sequence)
        else:
            raise ValueError(f"episode key {key!r}: unsupported value of dtype {array.dtype}")
    return specs


def serialize_episode(
    episode: Mapping[str, Any], features: Mapping[str, FeatureSpec], jpeg_quality: int = 95
) -> bytes:
    """One episode as a serialized `tf.train.Example`, flattened the way TFDS does."""
    flat = flatten_nested(episode)
    missing = sorted(set(features) - set(flat))
    if missing:
        raise ValueError(f"episode is missing features {missing}")
    lengths = {k: len(v) for k, v in flat.items() if k.startswith("steps/") and not isinstance(v, str)}
    num_steps = next(iter(lengths.values()), 0)
    if any(n != num_steps for n in lengths.values()):
        raise ValueError(f"every step feature must have the same number of steps; found {lengths}")
    out: dict[str, Any] = {}
    for key, spec in features.items():
        value = flat[key]
        if spec.kind == "text":
            texts = (
                [value] * (num_steps if spec.in_sequence else 1) if isinstance(value, str) else list(value)
            )
            out[key] = [t.encode("utf-8") for t in texts]
        elif spec.kind == "image":
            out[key] = [
                v if isinstance(v, bytes) else encode_image(v, spec.encoding_format, jpeg_quality)
                for v in value
            ]
        else:
            array = np.asarray(value, dtype=spec.dtype)
            expected = ((num_steps,) if spec.in_sequence else ()) + spec.shape
            if array.shape != expected:
                raise ValueError(f"feature {key!r}: expected shape {expected}, found {array.shape}")
            out[key] = array
    return encode_example(out)


class RLDSWriter:
    """Streams episodes into shards; `close()` publishes the dataset.

    Shards hold `shard_lengths[i]` episodes when given, else they are cut at `max_shard_bytes`.

    Use `add(episode)`, or `add_serialized(data)` with bytes from `serialize_episode` made in
    worker processes. Episodes keep their order: episode i of the reader is the i-th added.
    """

    def __init__(
        self,
        root: str | Path,
        name: str,
        features: Mapping[str, FeatureSpec],
        *,
        version: str = "1.0.0",
        split: str = "train",
        max_shard_bytes: int = 256 << 20,
        shard_lengths: list[int] | None = None,
        description: str = "",
        overwrite: bool = False,
        jpeg_quality: int = 95,
    ) -> None:
        self.final_dir = Path(root) / name / version
        if self.final_dir.exists() and not overwrite:
            raise FileExistsError(f"{self.final_dir} already exists; pass overwrite=True to replace it")
        self.name, self.version, self.split, self.features = name, version, split, dict(features)
        self.max_shard_bytes, self.target_lengths = max_shard_bytes, shard_lengths
        self.description, self.overwrite, self.jpeg_quality = description, overwrite, jpeg_quality
        self.tmp_dir = self.final_dir.with_name(f".{version}.tmp-{os.getpid()}")
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        self.tmp_dir.mkdir(parents=True)
        self._shard_lengths: list[int] = []
        self._shard_bytes = 0
        self._file = None
        self._num_bytes = 0

    def add(self, episode: Mapping[str, Any]) -> None:
        self.add_serialized(serialize_episode(episode, self.features, self.jpeg_quality))

    def add_serialized(self, data: bytes) -> None:
        if self._shard_is_full(len(data)):
            self._open_next_shard()
        record = frame_record(data)
        self._file.write(record)
        self._shard_bytes += len(record)
        self._num_bytes += len(record)
        self._shard_lengths[-1] += 1

    def _shard_is_full(self, num_bytes: int) -> bool:
        if self._file is None:
            return True
        if self.target_lengths is not None:
            return self._shard_lengths[-1] >= self.target_lengths[len(self._shard_lengths) - 1]
        return self._shard_bytes > 0 and self._shard_bytes + num_bytes > self.max_shard_bytes

    def _open_next_shard(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file = open(self.tmp_dir / f"shard-{len(self._shard_lengths):05d}", "wb")
        self._shard_lengths.append(0)
        self._shard_bytes = 0

    def close(self) -> Path:
        """Name the shards, write dataset_info.json and features.json, move the dataset into place."""
        if self._file is not None:
            self._file.close()
        num_shards = len(self._shard_lengths)
        for i in range(num_shards):
            os.replace(
                self.tmp_dir / f"shard-{i:05d}",
                self.tmp_dir / f"{self.name}-{self.split}.tfrecord-{i:05d}-of-{num_shards:05d}",
            )
        info = {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "fileFormat": "tfrecord",
            "moduleName": "craft_vla.data.rlds_writer",
            "releaseNotes": {self.version: "Written by craft_vla.data.rlds_writer."},
            "splits": [
                {
                    "name": self.split,
                    "numBytes": str(self._num_bytes),
                    "shardLengths": [str(n) for n in self._shard_lengths],
                    "filepathTemplate": SHARD_TEMPLATE,
                }
            ],
        }
        (self.tmp_dir / "dataset_info.json").write_text(json.dumps(info, indent=2))
        (self.tmp_dir / "features.json").write_text(json.dumps(features_to_json(self.features), indent=2))
        if self.final_dir.exists() and self.overwrite:
            shutil.rmtree(self.final_dir)
        os.replace(self.tmp_dir, self.final_dir)
        return self.final_dir

    def abort(self) -> None:
        """Drop everything written so far."""
        if self._file is not None:
            self._file.close()
        shutil.rmtree(self.tmp_dir, ignore_errors=True)


def write_rlds_dataset(
    root: str | Path,
    name: str,
    episodes: Iterable[Mapping[str, Any]],
    *,
    version: str = "1.0.0",
    num_shards: int | None = None,
    split: str = "train",
    features: Mapping[str, FeatureSpec] | None = None,
    image_format: str = "jpeg",
    jpeg_quality: int = 95,
    max_shard_bytes: int = 256 << 20,
    description: str = "",
    overwrite: bool = False,
) -> Path:
    """Write `episodes` as `<root>/<name>/<version>/` in the TFDS layout and return that directory.

    `num_shards` (needs a sized `episodes`) splits the episodes evenly in order; otherwise shards
    are cut at `max_shard_bytes`. Features are inferred from the first episode unless given.
    """
    iterator = iter(episodes)
    first = next(iterator, None)
    if first is None:
        raise ValueError("write_rlds_dataset needs at least one episode")
    shard_lengths = None
    if num_shards is not None:
        if not isinstance(episodes, Sized):
            raise ValueError("num_shards needs a sized collection of episodes (a list), not an iterator")
        if not 1 <= num_shards <= len(episodes):
            raise ValueError(f"num_shards must be in [1, {len(episodes)}] for {len(episodes)} episodes")
        shard_lengths = [len(part) for part in np.array_split(np.arange(len(episodes)), num_shards)]
    writer = RLDSWriter(
        root,
        name,
        features or infer_features(first, image_format),
        version=version,
        split=split,
        max_shard_bytes=max_shard_bytes,
        shard_lengths=shard_lengths,
        description=description,
        overwrite=overwrite,
        jpeg_quality=jpeg_quality,
    )
    try:
        writer.add(first)
        for episode in iterator:
            writer.add(episode)
    except BaseException:
        writer.abort()
        raise
    return writer.close()
