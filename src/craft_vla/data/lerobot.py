"""Read LeRobotDataset v3 roots (parquet frames, mp4 videos) with the RLDS reader's interface, from disk.

Layout (lerobot's codebase_version "v3.0"), all under one root:

    meta/info.json                          fps, features {key: {dtype, shape, names}}, splits, path templates
    meta/stats.json                         per-feature statistics of all episodes (min, max, mean, q01, ...)
    meta/tasks.parquet                      the task strings and their task_index
    meta/episodes/chunk-*/file-*.parquet    one row per episode: length, where its frames and video frames are
    data/chunk-*/file-*.parquet             one row per frame, many episodes per file
    videos/<key>/chunk-*/file-*.mp4         one camera's frames, many episodes per file, one after another

The reader speaks the RLDS vocabulary the rest of craft-vla uses: a feature map names the LeRobot keys of the
cameras, state and action, which become "observation/image", "observation/wrist_image", "observation/state"
and "action", and the frame's task becomes "language_instruction". A video frame is decoded with PyAV at the
episode's `from_timestamp` in its file plus the frame's `timestamp`; dtype "image" features are PNG/JPEG bytes
in the parquet rows. Episode i of a split is the i-th of its range in info.json's splits, so sample ids are
those of the same episodes stored as RLDS. lerobot itself is not needed: its v3 releases pin a torch older
than craft-vla's, so the documented layout is read with pyarrow and PyAV (`pip install 'craft-vla[lerobot]'`).
"""

from __future__ import annotations

import importlib
import json
import re
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from craft_vla.data.cache_dir import cache_dir
from craft_vla.data.image_codec import decode_image
from craft_vla.data.nesting import nest_flat
from craft_vla.data.normalize import DatasetStatistics, NormStats
from craft_vla.data.reader import EpisodeReader
from craft_vla.data.tfds_features import FeatureSpec
from craft_vla.data.transforms import DatasetKind

INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
# columns lerobot adds to every frame; bookkeeping, not step features
FRAME_COLUMNS = ("timestamp", "frame_index", "episode_index", "index", "task_index")
# VLA-Adapter's inputs (a role) -> the RLDS step feature the dataset kinds read
ROLE_STEP_KEYS = {
    "image": "observation/image",
    "wrist_image": "observation/wrist_image",
    "state": "observation/state",
    "action": "action",
}
INSTRUCTION_KEY = "language_instruction"
FEATURE_PRESETS: dict[str, dict[str, str]] = {
    # LIBERO in LeRobot (HuggingFaceVLA/libero and copies): two cameras, 8-dim state, 7-dim action
    "libero": {
        "image": "observation.images.image",
        "wrist_image": "observation.images.wrist_image",
        "state": "observation.state",
        "action": "action",
    },
}
STAT_KEYS = ("mean", "std", "max", "min", "q01", "q99")
INSTALL_HINT = "pip install 'craft-vla[lerobot]' (pyarrow and av)"


class LeRobotFormatError(ValueError):
    """A LeRobot dataset whose files disagree with their own description, or with the feature map."""


def require(module: str) -> Any:
    """Import pyarrow.parquet or av, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"reading and writing LeRobot datasets needs {module!r}: {INSTALL_HINT}") from e


def feature_map(spec: str | Mapping[str, str] | None = None) -> dict[str, str]:
    """{role: LeRobot key} for the roles image, wrist_image, state, action: the LIBERO preset, with the
    entries of `spec` replacing it ("image=observation.images.top,wrist_image=observation.images.hand";
    an empty key, "wrist_image=", leaves that input out)."""
    mapping = dict(FEATURE_PRESETS["libero"])
    if isinstance(spec, str):
        entries = [e.strip() for e in spec.split(",") if e.strip()]
        bad = [e for e in entries if "=" not in e]
        if bad:
            raise ValueError(
                f"--lerobot_features {spec!r}: expected role=KEY entries separated by commas, found {bad}"
            )
        spec = dict((part.strip() for part in e.split("=", 1)) for e in entries)
    unknown = sorted(set(spec or {}) - set(ROLE_STEP_KEYS))
    if unknown:
        raise ValueError(f"--lerobot_features: unknown roles {unknown}; the roles are {list(ROLE_STEP_KEYS)}")
    mapping.update(spec or {})
    if not mapping["action"]:
        raise ValueError("--lerobot_features: the action role needs a key (action=KEY)")
    return mapping


def is_lerobot_root(path: str | Path) -> bool:
    return (Path(path).expanduser() / INFO_PATH).is_file()


def split_episodes(info: Mapping[str, Any], split: str, where: Path) -> range:
    """The episode indices of `split` from info.json's "splits" ({"train": "0:50"}); without splits, all."""
    splits = info.get("splits") or {}
    if not splits and split == "train":
        return range(int(info.get("total_episodes", 0)))
    if split not in splits:
        raise LeRobotFormatError(f"{where}: no split {split!r} in info.json; it has {sorted(splits)}")
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(splits[split]))
    if match is None:
        raise LeRobotFormatError(
            f"{where}: split {split!r} is {splits[split]!r}; expected a range of episodes 'start:end'"
        )
    return range(int(match[1]), int(match[2]))


def image_shape(spec: Mapping[str, Any]) -> tuple[int, int, int]:
    """(H, W, C) of an image or video feature, whose info.json shape may be channel-first."""
    shape = [int(d) for d in spec.get("shape", [])]
    names = [str(n).lower() for n in spec.get("names") or []]
    if len(shape) != 3:
        raise LeRobotFormatError(f"image feature shape {shape}: expected 3 dimensions")
    channels_first = shape[0] in (1, 3, 4) and shape[2] not in (1, 3, 4)
    if (names and names[0].startswith("c")) or (not names and channels_first):
        return shape[1], shape[2], shape[0]
    return shape[0], shape[1], shape[2]


def column_values(table: Any, name: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """A parquet column as (rows, *shape): lists and fixed-size lists are flattened, scalars kept."""
    pa = require("pyarrow")
    column = table.column(name).combine_chunks()
    while pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type):
        column = column.flatten()  # respects the slice's offset, unlike .values
    values = column.to_numpy(zero_copy_only=False)
    return values.reshape(table.num_rows, *shape).astype(dtype, copy=False)


@dataclass
class _VideoCursor:
    """An open video file, the decoder's position (so that the next frame of a sequential read is decoded
    without a seek) and a colour converter kept across frames (PyAV makes a new one per frame otherwise)."""

    container: Any
    reformatter: Any
    frames: Iterator[Any] | None = None
    last_time: float = -1.0

    def rgb(self, frame: Any) -> np.ndarray:
        """uint8 (H, W, 3); lossless RGB H.264 decodes to planar GBR, which PyAV returns in RGB order."""
        if frame.format.name != "gbrp":
            frame = self.reformatter.reformat(frame, format="rgb24")
        return frame.to_ndarray()


class LeRobotReader(EpisodeReader):
    """Random access to the episodes and frames of one split of a local LeRobot v3 dataset.

    `features` maps roles to LeRobot keys (see `feature_map`). Attributes as `RLDSReader`'s: `name` (the
    root's directory name), `version`, `split`, `features` ({"steps/<step key>": FeatureSpec}),
    `episode_lengths` (E,) int64; plus `fps`, `feature_map` and `episode_indices` (the LeRobot episode
    index of each of the split's episodes).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        features: str | Mapping[str, str] | None = None,
        index_dir: str | Path | None = None,
        episode_cache_size: int = 1,
    ) -> None:
        self.data_dir = Path(root).expanduser()
        info_path = self.data_dir / INFO_PATH
        if not info_path.is_file():
            raise FileNotFoundError(f"{self.data_dir}: no {INFO_PATH}; not a LeRobot dataset root")
        try:
            self.info = json.loads(info_path.read_text())
        except json.JSONDecodeError as e:
            raise LeRobotFormatError(f"{info_path}: not valid JSON ({e})") from e
        self.version = str(self.info.get("codebase_version", ""))
        if not self.version.startswith("v3"):
            raise LeRobotFormatError(
                f"{info_path}: codebase_version {self.version!r}; this reader reads LeRobot v3.0 datasets "
                "(convert older ones with lerobot's convert_dataset_v21_to_v30)"
            )
        self.name, self.split = self.data_dir.name, split
        self.fps = float(self.info["fps"])
        self.lerobot_features: dict[str, dict[str, Any]] = self.info.get("features", {})
        self.feature_map = feature_map(features)
        self._check_feature_map()
        self.step_keys = self._step_keys()
        self.features = {f"steps/{step}": self._spec(step, key) for step, key in self.step_keys.items()}
        self.episode_cache_size = episode_cache_size
        self.index_dir = Path(index_dir) if index_dir is not None else cache_dir("lerobot_index")
        self.episodes = self._read_episodes(split_episodes(self.info, split, info_path))
        self.episode_indices = self.episodes["episode_index"]
        self.episode_lengths = self.episodes["length"]
        self.tasks = self._read_tasks()
        self._tables: OrderedDict[str, Any] = OrderedDict()
        self._cache: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._videos: dict[Path, _VideoCursor] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_tables"], state["_cache"], state["_videos"] = OrderedDict(), OrderedDict(), {}
        return state

    def __del__(self) -> None:
        for cursor in getattr(self, "_videos", {}).values():
            cursor.container.close()

    def _check_feature_map(self) -> None:
        present = sorted(self.lerobot_features)
        for role, key in self.feature_map.items():
            if key and key not in self.lerobot_features:
                raise LeRobotFormatError(
                    f"{self.data_dir}: the {role} input is mapped to LeRobot feature {key!r}, which "
                    f"{INFO_PATH} does not have; its features are {present}. Map it with "
                    f"--lerobot_features {role}=KEY"
                    + ("" if role == "action" else f" (or {role}= to go without)")
                )
            is_image = key and self.lerobot_features[key].get("dtype") in ("video", "image")
            if key and is_image != role.endswith("image"):
                raise LeRobotFormatError(
                    f"{self.data_dir}: {role} is mapped to {key!r}, a "
                    f"{self.lerobot_features[key].get('dtype')} feature; map {role} to "
                    f"{'a video or image' if role.endswith('image') else 'a numeric'} feature"
                )

    def _step_keys(self) -> dict[str, str]:
        """{RLDS step key: LeRobot key}: the mapped roles, then every other feature under its own name."""
        mapped = {ROLE_STEP_KEYS[role]: key for role, key in self.feature_map.items() if key}
        others = {
            key: key
            for key, spec in self.lerobot_features.items()
            if key not in mapped.values() and key not in FRAME_COLUMNS and spec.get("dtype") != "string"
        }
        return {**mapped, **others}

    def _spec(self, step: str, key: str) -> FeatureSpec:
        spec = self.lerobot_features[key]
        if spec["dtype"] in ("video", "image"):
            return FeatureSpec(f"steps/{step}", "image", "uint8", image_shape(spec), True, spec["dtype"])
        shape = tuple(int(d) for d in spec.get("shape", ()))
        return FeatureSpec(f"steps/{step}", "tensor", spec["dtype"], () if shape == (1,) else shape, True)

    def video_keys(self) -> list[str]:
        return [key for key in self.step_keys.values() if self.lerobot_features[key]["dtype"] == "video"]

    def _read_episodes(self, episodes: range) -> dict[str, np.ndarray]:
        """The split's rows of meta/episodes, ordered by episode index: where each episode's frames are."""
        pq = require("pyarrow.parquet")
        files = sorted((self.data_dir / EPISODES_DIR).glob("chunk-*/file-*.parquet"))
        if not files:
            raise LeRobotFormatError(f"{self.data_dir}: no {EPISODES_DIR}/chunk-*/file-*.parquet")
        names = ["episode_index", "length", "data/chunk_index", "data/file_index", "dataset_from_index"]
        for key in self.video_keys():
            names += [f"videos/{key}/chunk_index", f"videos/{key}/file_index", f"videos/{key}/from_timestamp"]
        columns: dict[str, list[np.ndarray]] = {n: [] for n in names}
        for path in files:
            table = pq.read_table(path)
            missing = [n for n in names if n not in table.column_names]
            if missing:
                raise LeRobotFormatError(f"{path}: episode columns {missing} are missing")
            for n in names:
                columns[n].append(table.column(n).to_numpy())
        rows = {n: np.concatenate(v) for n, v in columns.items()}
        order = np.argsort(rows["episode_index"], kind="stable")
        rows = {n: v[order] for n, v in rows.items()}
        keep = np.isin(rows["episode_index"], np.asarray(episodes, dtype=np.int64))
        rows = {n: v[keep] for n, v in rows.items()}
        if len(rows["episode_index"]) != len(episodes):
            found = set(rows["episode_index"].tolist())
            absent = [e for e in episodes if e not in found][:5]
            raise LeRobotFormatError(
                f"{self.data_dir}: split {self.split!r} spans episodes "
                f"{episodes.start}..{episodes.stop - 1}, "
                f"but {EPISODES_DIR} lacks {absent}..."
            )
        for n in names:
            if n.endswith("timestamp"):
                rows[n] = rows[n].astype(np.float64)
            else:
                rows[n] = rows[n].astype(np.int64)
        return rows

    def _read_tasks(self) -> dict[int, str]:
        pq = require("pyarrow.parquet")
        path = self.data_dir / TASKS_PATH
        if not path.is_file():
            raise LeRobotFormatError(f"{self.data_dir}: no {TASKS_PATH}")
        table = pq.read_table(path)
        text = next((n for n in ("task", "__index_level_0__") if n in table.column_names), None)
        if text is None or "task_index" not in table.column_names:
            raise LeRobotFormatError(
                f"{path}: expected the columns task and task_index, found {table.column_names}"
            )
        return dict(zip(table.column("task_index").to_pylist(), table.column(text).to_pylist()))

    def fingerprint(self) -> list[dict[str, Any]]:
        """Name, size and mtime of the metadata and data files, and the feature map; a change invalidates
        caches (statistics)."""
        files = [self.data_dir / INFO_PATH, self.data_dir / TASKS_PATH]
        files += sorted((self.data_dir / EPISODES_DIR).glob("chunk-*/file-*.parquet"))
        files += sorted((self.data_dir / "data").glob("chunk-*/file-*.parquet"))
        files += sorted((self.data_dir / "videos").glob("*/chunk-*/file-*.mp4"))
        stamps = [
            {
                "name": str(p.relative_to(self.data_dir)),
                "size": p.stat().st_size,
                "mtime_ns": p.stat().st_mtime_ns,
            }
            for p in files
        ]
        return [*stamps, {"feature_map": dict(self.feature_map)}]

    def _data_table(self, chunk: int, file: int) -> Any:
        """One data parquet file's columns (videos excluded); the last two read are kept."""
        path = self.data_dir / self.info["data_path"].format(chunk_index=chunk, file_index=file)
        key = str(path)
        if key not in self._tables:
            pq = require("pyarrow.parquet")
            if not path.is_file():
                raise LeRobotFormatError(f"{path}: data file listed in {EPISODES_DIR} is missing")
            wanted = [k for k in self.step_keys.values() if self.lerobot_features[k]["dtype"] != "video"]
            wanted += ["episode_index", "timestamp", "task_index"]
            table = pq.read_table(path, memory_map=True)
            missing = [k for k in wanted if k not in table.column_names]
            if missing:
                raise LeRobotFormatError(
                    f"{path}: frame columns {missing} are missing; it has {table.column_names}"
                )
            self._tables[key] = table.select(wanted)
            while len(self._tables) > 2:
                self._tables.popitem(last=False)
        self._tables.move_to_end(key)
        return self._tables[key]

    def _check_episode(self, episode: int) -> None:
        if not 0 <= episode < self.num_episodes:
            raise IndexError(f"{self.name}: episode {episode} out of range [0, {self.num_episodes})")

    def episode_record(self, episode: int) -> dict[str, Any]:
        """One episode's frame columns {step key: (T, ...) array, "language_instruction": [T str],
        "timestamp": (T,) float64}; images of dtype "image" stay encoded. The last few are cached."""
        cached = self._cached_record(episode)
        if cached is not None:
            return cached
        self._check_episode(episode)
        index = int(self.episode_indices[episode])
        table = self._data_table(
            int(self.episodes["data/chunk_index"][episode]), int(self.episodes["data/file_index"][episode])
        )
        rows = np.flatnonzero(table.column("episode_index").to_numpy() == index)
        length = int(self.episode_lengths[episode])
        if len(rows) != length or (length and rows[-1] - rows[0] != length - 1):
            raise LeRobotFormatError(
                f"{self.data_dir}: episode {index} should have {length} consecutive frames in its data file, "
                f"found {len(rows)}"
            )
        part = table.slice(int(rows[0]) if length else 0, length)
        record: dict[str, Any] = {"timestamp": part.column("timestamp").to_numpy().astype(np.float64)}
        for step, key in self.step_keys.items():
            spec = self.features[f"steps/{step}"]
            dtype = self.lerobot_features[key]["dtype"]
            if dtype == "image":
                record[step] = [cell["bytes"] for cell in part.column(key).to_pylist()]
            elif dtype != "video":
                record[step] = column_values(part, key, spec.shape, spec.dtype)
        task_indices = part.column("task_index").to_pylist()
        unknown = sorted(set(task_indices) - set(self.tasks))
        if unknown:
            raise LeRobotFormatError(
                f"{self.data_dir}: episode {index} uses task indices {unknown} not in {TASKS_PATH}"
            )
        record[INSTRUCTION_KEY] = [self.tasks[t] for t in task_indices]
        return self._remember(episode, record)

    def step_fields(self, episode: int) -> dict[str, Any]:
        """The episode's non-image step features, stacked over steps, keyed as in RLDS
        ({"action": (T, A), "observation/state": (T, S), "language_instruction": [T str], ...})."""
        record = self.episode_record(episode)
        fields = {k: v for k, v in record.items() if k != "timestamp" and self._is_field(k)}
        return fields

    def _is_field(self, step: str) -> bool:
        spec = self.features.get(f"steps/{step}")
        return spec is None or spec.kind != "image"

    def _lerobot_image_key(self, key: str) -> str:
        spec = self.features.get(f"steps/{key}")
        if spec is None or spec.kind != "image":
            images = [k.split("/", 1)[1] for k, s in self.features.items() if s.kind == "image"]
            raise KeyError(
                f"{self.data_dir}: no image feature {key!r} (LeRobot cameras mapped by --lerobot_features); "
                f"image features: {images}"
            )
        return self.step_keys[key]

    def step_image(self, episode: int, step: int, key: str) -> np.ndarray:
        """One decoded image, uint8 (H, W, C); `key` is the step feature ("observation/image")."""
        lerobot_key = self._lerobot_image_key(key)
        record = self.episode_record(episode)
        if not 0 <= step < len(record["timestamp"]):
            raise IndexError(
                f"{self.name}: step {step} out of range [0, {len(record['timestamp'])}) of episode {episode}"
            )
        where = f"{self.data_dir}: episode {int(self.episode_indices[episode])} frame {step} {lerobot_key}"
        if self.lerobot_features[lerobot_key]["dtype"] == "image":
            image = decode_image(record[key][step], self.features[f"steps/{key}"].shape[-1], where)
        else:
            image = self._video_frame(episode, lerobot_key, float(record["timestamp"][step]), where)
        expected = self.features[f"steps/{key}"].shape
        if image.shape != expected:
            raise LeRobotFormatError(
                f"{where}: decoded to shape {image.shape}, {INFO_PATH} declares {expected}"
            )
        return image

    def _video_path(self, episode: int, key: str) -> Path:
        chunk = int(self.episodes[f"videos/{key}/chunk_index"][episode])
        file = int(self.episodes[f"videos/{key}/file_index"][episode])
        relative = self.info["video_path"].format(video_key=key, chunk_index=chunk, file_index=file)
        return self.data_dir / relative

    def _cursor(self, path: Path, where: str) -> _VideoCursor:
        """The video file at `path`, opened on first use."""
        if path not in self._videos:
            if not path.is_file():
                raise LeRobotFormatError(f"{where}: video file {path} is missing")
            av = require("av")
            container = av.open(str(path))
            # one thread: DataLoader workers decode in parallel already, and the machine's cores are shared
            container.streams.video[0].codec_context.thread_count = 1
            self._videos[path] = _VideoCursor(container, av.video.reformatter.VideoReformatter())
        return self._videos[path]

    def _video_frame(self, episode: int, key: str, timestamp: float, where: str) -> np.ndarray:
        """The frame of `key` shown at the episode's start in its file + `timestamp`, as uint8 (H, W, 3)."""
        path = self._video_path(episode, key)
        target = float(self.episodes[f"videos/{key}/from_timestamp"][episode]) + timestamp
        tolerance = 0.5 / self.fps
        cursor = self._cursor(path, where)
        stream = cursor.container.streams.video[0]
        # a frame a little ahead of the last one decoded is reached by decoding on; otherwise seek to the
        # keyframe before it
        if cursor.frames is None or not cursor.last_time < target < cursor.last_time + 1.0:
            cursor.container.seek(
                max(0, int((target - tolerance) / stream.time_base)), stream=stream, backward=True
            )
            cursor.frames = cursor.container.decode(stream)
        for frame in cursor.frames:
            cursor.last_time = float(frame.time)
            if frame.time < target - tolerance:
                continue
            if frame.time > target + tolerance:
                break
            return cursor.rgb(frame)
        cursor.frames = None
        raise LeRobotFormatError(f"{where}: {path} has no frame at {target:.4f} s (within {tolerance:.4f} s)")

    def _images(self, episode: int, step: int) -> dict[str, np.ndarray]:
        return {
            k.split("/", 1)[1]: self.step_image(episode, step, k.split("/", 1)[1])
            for k, s in self.features.items()
            if s.kind == "image"
        }

    def _metadata(self, episode: int) -> dict[str, Any]:
        return {"episode_index": int(self.episode_indices[episode])}

    def get_step(self, episode: int, step: int) -> dict[str, Any]:
        """One step as a nested dict ({"observation": {"image": (H, W, 3) uint8, ...}, "action": ...})
        plus the episode's metadata under "episode_metadata"."""
        fields = self.step_fields(episode)
        if not 0 <= step < int(self.episode_lengths[episode]):
            raise IndexError(
                f"{self.name}: step {step} out of range "
                f"[0, {self.episode_lengths[episode]}) of episode {episode}"
            )
        flat = {k: v[step] for k, v in fields.items()}
        flat.update(self._images(episode, step))
        flat.update({f"episode_metadata/{k}": v for k, v in self._metadata(episode).items()})
        return nest_flat(flat)

    def read_episode(self, episode: int, decode_images: bool = True) -> dict[str, Any]:
        """A whole episode as {"steps": {...stacked over T...}, "episode_metadata": {...}}, the format
        `write_rlds_dataset` and `LeRobotWriter.add` take; without `decode_images` the images are left out."""
        flat = {f"steps/{k}": v for k, v in self.step_fields(episode).items()}
        if decode_images:
            frames = [self._images(episode, t) for t in range(int(self.episode_lengths[episode]))]
            for key in frames[0] if frames else {}:
                flat[f"steps/{key}"] = np.stack([f[key] for f in frames])
        flat.update({f"episode_metadata/{k}": v for k, v in self._metadata(episode).items()})
        return nest_flat(flat)

    def stats_json_statistics(self, kind: DatasetKind) -> DatasetStatistics | None:
        """The statistics VLA-Adapter normalises with, from meta/stats.json, when they describe what is
        normalised: the identity transform (another kind's transform, e.g. LIBERO's gripper flip, changes the
        numbers), the whole dataset in the split (stats.json covers every episode), and q01/q99 present for
        the action (and the state, when mapped). None otherwise: then they are computed from the frames."""
        path = self.data_dir / STATS_PATH
        if kind.name != "identity" or not path.is_file():
            return None
        if self.num_episodes != int(self.info.get("total_episodes", -1)):
            return None
        stats = json.loads(path.read_text())
        entries = {}
        for role, mask_fn in (("action", kind.action_mask_fn), ("state", kind.proprio_mask_fn)):
            key = self.feature_map[role]
            entry = stats.get(key) if key else None
            if key and (entry is None or not set(STAT_KEYS) <= set(entry)):
                return None
            if entry is not None:
                values = {k: np.asarray(entry[k], dtype=np.float64).reshape(-1).tolist() for k in STAT_KEYS}
                mask = mask_fn(len(values["q01"])).tolist()
                entries[role] = NormStats.from_json({**values, "mask": mask}, f"{path}: {key}")
        return DatasetStatistics(
            action=entries["action"],
            proprio=entries.get("state"),
            num_transitions=self.num_steps,
            num_trajectories=self.num_episodes,
        )


__all__ = [
    "FEATURE_PRESETS",
    "LeRobotFormatError",
    "LeRobotReader",
    "feature_map",
    "is_lerobot_root",
]
