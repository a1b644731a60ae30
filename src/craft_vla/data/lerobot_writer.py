"""Write LeRobotDataset v3 roots from episodes in the RLDS episode format, so one suite is stored both ways.

An episode is the nested dict `RLDSReader.read_episode` returns (see `rlds_writer`). Its cameras (uint8
(T, H, W, 3) under `steps`) become mp4 videos encoded losslessly (H.264 in RGB, libx264rgb at qp 0: every
decoded frame equals the written one bit for bit); its other step arrays become parquet columns, named by the
feature map for the mapped roles (LIBERO's layout by default) and by their path with dots otherwise
("observation/joint_state" -> "observation.joint_state"); its instruction becomes the frames' task. Episode
metadata is not kept (v3 has no place for it). meta/stats.json holds numpy's exact statistics of every numeric
feature (linear-interpolated q01/q99, as `normalize.compute_norm_stats`), so a reader takes the same
normalisation from it as from the frames. Episodes share files as v3 does: a new data or video file starts
when the current one passes its size limit. The dataset is written into a temporary directory and renamed to
`<root>/<name>/` when complete.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from craft_vla.data.lerobot import (
    EPISODES_DIR,
    FRAME_COLUMNS,
    INFO_PATH,
    INSTRUCTION_KEY,
    ROLE_STEP_KEYS,
    STATS_PATH,
    TASKS_PATH,
    feature_map,
    require,
)
from craft_vla.data.nesting import flatten_nested

DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
# lossless RGB H.264; a keyframe every 2 frames: a random access decodes at most one frame before its own
VIDEO_CODEC = "libx264rgb"
VIDEO_OPTIONS = {"qp": "0", "g": "2", "bf": "0", "preset": "veryfast", "threads": "1"}
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}


def lerobot_keys(step_keys: Iterable[str], features: str | Mapping[str, str] | None = None) -> dict[str, str]:
    """{RLDS step key: LeRobot key}: mapped roles by the feature map, other keys with "/" -> "."."""
    by_step = {ROLE_STEP_KEYS[role]: key for role, key in feature_map(features).items() if key}
    return {step: by_step.get(step, step.replace("/", ".")) for step in step_keys if step != INSTRUCTION_KEY}


def feature_stats(values: np.ndarray) -> dict[str, Any]:
    """min, max, mean, std (population), count and q01..q99 of values (N, ...) over N, in float64."""
    x = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    stats = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0)}
    stats.update({name: np.quantile(x, q, axis=0) for name, q in QUANTILES.items()})
    return {**{k: v.tolist() for k, v in stats.items()}, "count": [len(x)]}


def _column(values: np.ndarray) -> Any:
    """A numpy array (N, *shape) as an arrow column: nested fixed-size lists for per-frame arrays."""
    pa = require("pyarrow")
    column = pa.array(np.ascontiguousarray(values).reshape(-1))
    for size in reversed(values.shape[1:]):
        column = pa.FixedSizeListArray.from_arrays(column, size)
    return column


def _tasks_table(tasks: Mapping[str, int]) -> Any:
    """meta/tasks.parquet as pandas writes a frame indexed by the task (lerobot reads it with pandas)."""
    pa = require("pyarrow")
    table = pa.table({"task_index": pa.array(list(tasks.values()), pa.int64()), "task": list(tasks)})

    def column(name: str | None, pandas_type: str, numpy_type: str) -> dict[str, Any]:
        return {"name": name, "field_name": name, "pandas_type": pandas_type, "numpy_type": numpy_type}

    pandas = {
        "index_columns": ["task"],
        "column_indexes": [{**column(None, "unicode", "object"), "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {**column("task_index", "int64", "int64"), "metadata": None},
            {**column("task", "unicode", "object"), "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    return table.replace_schema_metadata({"pandas": json.dumps(pandas)})


class _VideoFile:
    """One open mp4 of one camera: frames appended in order, timestamps continuing across episodes."""

    def __init__(self, path: Path, fps: int, height: int, width: int) -> None:
        av = require("av")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.fps, self.num_frames = path, fps, 0
        self.container = av.open(str(path), mode="w")
        self.stream = self.container.add_stream(VIDEO_CODEC, rate=fps, options=dict(VIDEO_OPTIONS))
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "rgb24"

    def add(self, frames: np.ndarray) -> None:
        av = require("av")
        for image in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts, frame.time_base = self.num_frames, Fraction(1, self.fps)
            self.container.mux(self.stream.encode(frame))
            self.num_frames += 1

    def close(self) -> int:
        """Flush and close; the file's size in bytes."""
        self.container.mux(self.stream.encode(None))
        self.container.close()
        return self.path.stat().st_size


class LeRobotWriter:
    """Streams episodes into a LeRobot v3 root; `close()` writes the metadata and publishes the dataset.

    `features` is the feature map (`lerobot.feature_map`: LIBERO's keys by default). Episode i of the reader
    is the i-th added. Files are cut at `data_file_mb` / `video_file_mb` (lerobot's defaults: 100 / 200).
    """

    def __init__(
        self,
        root: str | Path,
        name: str,
        *,
        fps: int = 10,
        features: str | Mapping[str, str] | None = None,
        robot_type: str | None = None,
        overwrite: bool = False,
        data_file_mb: float = 100,
        video_file_mb: float = 200,
        chunks_size: int = 1000,
    ) -> None:
        for module in ("pyarrow.parquet", "av"):  # fail before anything is written
            require(module)
        self.final_dir = Path(root) / name
        if self.final_dir.exists() and not overwrite:
            raise FileExistsError(f"{self.final_dir} already exists; pass overwrite=True to replace it")
        self.fps, self.features, self.robot_type, self.overwrite = int(fps), features, robot_type, overwrite
        self.data_file_mb, self.video_file_mb, self.chunks_size = data_file_mb, video_file_mb, chunks_size
        self.tmp_dir = self.final_dir.with_name(f".{name}.tmp-{os.getpid()}")
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        self.tmp_dir.mkdir(parents=True)
        self.info_features: dict[str, dict[str, Any]] | None = None
        self.keys: dict[str, str] = {}
        self.tasks: dict[str, int] = {}
        self.episodes: list[dict[str, Any]] = []
        self.values: dict[str, list[np.ndarray]] = {}
        self.num_frames = 0
        self._data: dict[str, Any] = {"writer": None, "file": -1, "bytes": 0}
        self._videos: dict[str, _VideoFile] = {}
        self._video_files: dict[str, int] = {}

    def _position(self, file: int) -> dict[str, int]:
        return {"chunk_index": file // self.chunks_size, "file_index": file % self.chunks_size}

    def _describe(self, steps: Mapping[str, Any]) -> None:
        """info.json's features, from the first episode."""
        self.keys = lerobot_keys(steps, self.features)
        features: dict[str, dict[str, Any]] = {}
        for step, key in self.keys.items():
            array = np.asarray(steps[step])
            if array.dtype == np.uint8 and array.ndim == 4 and array.shape[-1] == 3:
                features[key] = self._video_feature(*array.shape[1:3])
            elif array.dtype.kind in "biuf":
                shape = list(array.shape[1:]) or [1]
                features[key] = {"dtype": array.dtype.name, "shape": shape, "names": None}
            else:
                raise ValueError(f"episode step feature {step!r}: unsupported dtype {array.dtype}")
        for key in FRAME_COLUMNS:
            dtype = "float32" if key == "timestamp" else "int64"
            features[key] = {"dtype": dtype, "shape": [1], "names": None}
        self.info_features = features

    def _video_feature(self, height: int, width: int) -> dict[str, Any]:
        info = {"video.height": height, "video.width": width, "video.codec": "h264", "video.pix_fmt": "gbrp"}
        info.update({"video.is_depth_map": False, "video.fps": self.fps, "video.channels": 3})
        info["has_audio"] = False
        names = ["height", "width", "channels"]
        return {"dtype": "video", "shape": [height, width, 3], "names": names, "info": info}

    def add(self, episode: Mapping[str, Any]) -> None:
        flat = flatten_nested(episode)
        steps = {k.split("/", 1)[1]: v for k, v in flat.items() if k.startswith("steps/")}
        if self.info_features is None:
            self._describe(steps)
        missing = sorted(set(self.keys) - set(steps))
        if missing:
            raise ValueError(f"episode is missing step features {missing} (the first episode had them)")
        length = len(steps[next(iter(self.keys))])
        instruction = steps.get(INSTRUCTION_KEY, "")
        texts = [instruction] * length if isinstance(instruction, str) else [str(t) for t in instruction]
        for text in texts:
            self.tasks.setdefault(text, len(self.tasks))
        index = len(self.episodes)
        row: dict[str, Any] = {"episode_index": index, "tasks": sorted(set(texts), key=texts.index)}
        row.update({"length": length, "dataset_from_index": self.num_frames})
        row["dataset_to_index"] = self.num_frames + length
        columns: dict[str, Any] = {}
        for step, key in self.keys.items():
            array = np.asarray(steps[step])
            if len(array) != length:
                raise ValueError(f"step feature {step!r} has {len(array)} steps, others have {length}")
            if self.info_features[key]["dtype"] == "video":
                row.update(self._add_video(key, array))
            else:
                array = array.astype(self.info_features[key]["dtype"], copy=False)
                self.values.setdefault(key, []).append(array)
                columns[key] = _column(array)
        frames = np.arange(length, dtype=np.int64)
        columns["timestamp"] = _column((frames / self.fps).astype(np.float32))
        columns["frame_index"] = _column(frames)
        columns["episode_index"] = _column(np.full(length, index, dtype=np.int64))
        columns["index"] = _column(frames + self.num_frames)
        columns["task_index"] = _column(np.asarray([self.tasks[t] for t in texts], dtype=np.int64))
        row.update(self._add_data(columns))
        self.episodes.append(row)
        self.num_frames += length

    def _add_data(self, columns: Mapping[str, Any]) -> dict[str, int]:
        pa, pq = require("pyarrow"), require("pyarrow.parquet")
        table = pa.table(dict(columns))
        data = self._data
        if data["writer"] is None or data["bytes"] > self.data_file_mb * 2**20:
            if data["writer"] is not None:
                data["writer"].close()
            data["file"] += 1
            path = self.tmp_dir / DATA_PATH.format(**self._position(data["file"]))
            path.parent.mkdir(parents=True, exist_ok=True)
            data["writer"], data["bytes"] = pq.ParquetWriter(path, table.schema), 0
        data["writer"].write_table(table)
        data["bytes"] += table.nbytes
        return {f"data/{k}": v for k, v in self._position(data["file"]).items()}

    def _add_video(self, key: str, frames: np.ndarray) -> dict[str, Any]:
        video = self._videos.get(key)
        if video is None or video.path.stat().st_size > self.video_file_mb * 2**20:
            if video is not None:
                video.close()
            self._video_files[key] = self._video_files.get(key, -1) + 1
            position = self._position(self._video_files[key])
            path = self.tmp_dir / VIDEO_PATH.format(video_key=key, **position)
            video = self._videos[key] = _VideoFile(path, self.fps, *frames.shape[1:3])
        start = video.num_frames / self.fps
        video.add(frames)
        position = self._position(self._video_files[key])
        return {
            f"videos/{key}/chunk_index": position["chunk_index"],
            f"videos/{key}/file_index": position["file_index"],
            f"videos/{key}/from_timestamp": start,
            f"videos/{key}/to_timestamp": video.num_frames / self.fps,
        }

    def close(self) -> Path:
        """Close the files, write meta/ (info, stats, tasks, episodes), move the dataset into place."""
        pa, pq = require("pyarrow"), require("pyarrow.parquet")
        if not self.episodes:
            self.abort()
            raise ValueError("a LeRobot dataset needs at least one episode")
        self._data["writer"].close()
        for video in self._videos.values():
            video.close()
        (self.tmp_dir / EPISODES_DIR / "chunk-000").mkdir(parents=True)
        where = {"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}
        rows = [{**row, **where} for row in self.episodes]
        episodes = pa.Table.from_pylist(rows)
        pq.write_table(episodes, self.tmp_dir / EPISODES_DIR / "chunk-000/file-000.parquet")
        pq.write_table(_tasks_table(self.tasks), self.tmp_dir / TASKS_PATH)
        stats = {key: feature_stats(np.concatenate(values)) for key, values in self.values.items()}
        (self.tmp_dir / STATS_PATH).write_text(json.dumps(stats, indent=2))
        info = {
            "codebase_version": "v3.0",
            "robot_type": self.robot_type,
            "total_episodes": len(self.episodes),
            "total_frames": self.num_frames,
            "total_tasks": len(self.tasks),
            "chunks_size": self.chunks_size,
            "data_files_size_in_mb": self.data_file_mb,
            "video_files_size_in_mb": self.video_file_mb,
            "fps": self.fps,
            "splits": {"train": f"0:{len(self.episodes)}"},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if self._videos else None,
            "features": self.info_features,
        }
        (self.tmp_dir / INFO_PATH).write_text(json.dumps(info, indent=4))
        if self.final_dir.exists() and self.overwrite:
            shutil.rmtree(self.final_dir)
        os.replace(self.tmp_dir, self.final_dir)
        return self.final_dir

    def abort(self) -> None:
        """Drop everything written so far."""
        if self._data["writer"] is not None:
            self._data["writer"].close()
        for video in self._videos.values():
            video.container.close()
        shutil.rmtree(self.tmp_dir, ignore_errors=True)


def write_lerobot_dataset(
    root: str | Path,
    name: str,
    episodes: Iterable[Mapping[str, Any]],
    *,
    fps: int = 10,
    features: str | Mapping[str, str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `episodes` as the LeRobot v3 root `<root>/<name>/` and return it."""
    writer = LeRobotWriter(root, name, fps=fps, features=features, overwrite=overwrite)
    try:
        for episode in episodes:
            writer.add(episode)
    except BaseException:
        writer.abort()
        raise
    return writer.close()
