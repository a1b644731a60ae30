"""Scripted-expert demonstrations of the suite, written as an RLDS dataset (the layout LIBERO uses).

Episode i of task t is (t, seed + i) in the given split; episodes are ordered i-major (every task's
episode 0, then every task's episode 1, ...) so any prefix covers all tasks. Workers run the
expert, render and JPEG-encode; the main process writes the records in order, so the dataset is
the same for any number of workers. An episode whose expert fails (none should) is left out and
counted.

Optional DART-style noise: the executed action is the expert's plus Gaussian noise on (dx, dy),
the recorded action is the expert's clean label, so the data shows recoveries from small errors.

Each step records the observation before the action: "image", "wrist_image" uint8 (H, W, 3),
"state" float32 (S,), then "action" float32 (A,); reward is 1 on the last (successful) step;
`episode_metadata/file_path` is "tabletop/<split>/<task>/<seed>".
"""

from __future__ import annotations

import multiprocessing as mp
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from craft_vla.sim.env import DEFAULT_MAX_STEPS, TabletopEnv
from craft_vla.sim.episodes import make_episode
from craft_vla.sim.tasks import TASK_NAMES, make_tasks
from craft_vla.sim.world import ACTION_DIM, Scene, WorldConfig, step_world

DATASET_VERSION = "1.0.0"


def dataset_name(split: str) -> str:
    """The default dataset name of a split: "tabletop" for train, "tabletop_<split>" otherwise."""
    return "tabletop" if split == "train" else f"tabletop_{split}"


def episode_specs(tasks: Sequence[str], num_episodes_per_task: int, seed: int) -> list[tuple[str, int]]:
    """(task, episode seed) pairs, i-major."""
    return [(task, seed + i) for i in range(num_episodes_per_task) for task in tasks]


def expert_states(num_episodes: int, config: WorldConfig | None = None) -> list[Scene]:
    """Every state of `num_episodes` expert episodes, what demonstrations show: episode k runs the k-th task
    (in turn) from seed k."""
    config, tasks, states = config or WorldConfig(), make_tasks(), []
    for k in range(num_episodes):
        task = TASK_NAMES[k % len(TASK_NAMES)]
        episode = make_episode(task, k, config=config)
        while not tasks[task].success(episode.scene, episode.goal, config):
            states.append(episode.scene.copy())
            step_world(episode.scene, tasks[task].expert(episode.scene, episode.goal, config), config)
    return states


def record_demonstration(
    env: TabletopEnv, task: str, seed: int, action_noise: float = 0.0
) -> dict[str, Any] | None:
    """Run the expert on episode (task, seed) of `env`'s split; the RLDS episode
    dict, or None if it failed."""
    obs = env.reset(task, seed)
    rng = np.random.default_rng([seed, zlib.crc32(f"noise/{task}".encode())])
    frames: dict[str, list[np.ndarray]] = {"image": [], "wrist_image": [], "state": [], "action": []}
    done = False
    while not done:
        label = env.expert_action()
        for key in ("image", "wrist_image", "state"):
            frames[key].append(obs[key])
        frames["action"].append(label)
        executed = label.astype(np.float64)
        if action_noise > 0:
            executed[:2] = np.clip(executed[:2] + rng.normal(0.0, action_noise, 2), -1.0, 1.0)
        _, done, info = env.act(executed)
        if not done:
            obs = env.observation()
    if not info["success"]:
        return None
    num = len(frames["action"])
    last = np.arange(num) == num - 1
    return {
        "steps": {
            "observation": {
                "image": np.stack(frames["image"]),
                "wrist_image": np.stack(frames["wrist_image"]),
                "state": np.stack(frames["state"]).astype(np.float32),
            },
            "action": np.stack(frames["action"]).astype(np.float32).reshape(num, ACTION_DIM),
            "language_instruction": env.instruction,
            "reward": last.astype(np.float32),
            "discount": np.ones(num, dtype=np.float32),
            "is_first": np.arange(num) == 0,
            "is_last": last,
            "is_terminal": last,
        },
        "episode_metadata": {"file_path": f"tabletop/{env.split}/{task}/{seed}"},
    }


@dataclass(frozen=True)
class _Job:
    split: str
    image_size: int
    action_noise: float
    max_steps: int
    features: Mapping[str, Any] | None  # serialize in the worker when given
    config: WorldConfig | None = None


_worker_env: TabletopEnv | None = None
_worker_job: _Job | None = None


def _init_worker(job: _Job) -> None:
    global _worker_env, _worker_job
    _worker_job = job
    _worker_env = TabletopEnv(job.image_size, job.split, job.max_steps, config=job.config)


def _run_spec(spec: tuple[str, int]) -> tuple[tuple[str, int], Any, int]:
    """(spec, episode dict or serialized bytes or None, number of steps) in a worker."""
    from craft_vla.data.rlds_writer import serialize_episode

    episode = record_demonstration(_worker_env, spec[0], spec[1], _worker_job.action_noise)
    if episode is None:
        return spec, None, 0
    steps = len(episode["steps"]["action"])
    if _worker_job.features is not None:
        episode = serialize_episode(episode, _worker_job.features)
    return spec, episode, steps


def iter_demonstrations(
    specs: Sequence[tuple[str, int]],
    split: str = "train",
    image_size: int = 64,
    workers: int = 1,
    action_noise: float = 0.0,
    max_steps: int = DEFAULT_MAX_STEPS,
    features: Mapping[str, Any] | None = None,
    progress: bool = True,
    config: WorldConfig | None = None,
) -> Iterator[tuple[tuple[str, int], Any, int]]:
    """Yield (spec, episode, num_steps) in the order of `specs`; episode is None for a failed expert,
    an episode dict, or its serialized record when `features` is given. `workers` > 1 uses processes."""
    job = _Job(split, image_size, action_noise, max_steps, features, config)
    bar = tqdm(total=len(specs), desc=f"demonstrations {split}", unit="ep", disable=not progress)
    if workers <= 1:
        _init_worker(job)
        results: Iterator = map(_run_spec, specs)
        pool = None
    else:
        pool = mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(job,))
        results = pool.imap(_run_spec, specs, chunksize=max(1, min(8, len(specs) // (4 * workers))))
    try:
        for result in results:
            bar.update(1)
            yield result
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()


@dataclass(frozen=True)
class GenerationReport:
    path: Path
    episodes: int
    steps: int
    failed: list[tuple[str, int]]
    seconds: float
    bytes_on_disk: int

    def summary(self) -> str:
        rate = self.episodes / max(self.seconds, 1e-9)
        return (
            f"{self.path}: {self.episodes} episodes, {self.steps} steps in {self.seconds:.1f} s "
            f"({rate:.1f} episodes/s, {self.steps / max(self.seconds, 1e-9):.0f} steps/s), "
            f"{self.bytes_on_disk / 2**20:.1f} MiB, {len(self.failed)} expert failures"
        )


def write_demonstrations(
    out_dir: str | Path,
    num_episodes_per_task: int,
    image_size: int = 64,
    seed: int = 0,
    workers: int = 1,
    split: str = "train",
    tasks: Sequence[str] = TASK_NAMES,
    action_noise: float = 0.0,
    name: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    config: WorldConfig | None = None,
    dataset_format: str = "rlds",
) -> GenerationReport:
    """Generate the demonstrations and write them as `<out_dir>/<name>/1.0.0/` (RLDS, TFDS layout), or with
    `dataset_format="lerobot"` as the LeRobot v3 root `<out_dir>/<name>/` (lossless videos, LIBERO's keys).

    `config` changes the world (e.g. `WorldConfig(min_objects=1, max_objects=1)` for single-object scenes).
    """
    from craft_vla.data.rlds_writer import RLDSWriter, infer_features

    start = time.perf_counter()
    specs = episode_specs(tasks, num_episodes_per_task, seed)
    probe = record_demonstration(TabletopEnv(image_size, split, config=config), *specs[0]) if specs else None
    if probe is None:
        raise RuntimeError(f"cannot generate: no episodes requested or the expert failed on {specs[:1]}")
    features = infer_features(probe)
    name = name or dataset_name(split)
    description = (
        f"craft-vla embedded tabletop suite, split {split}, expert demonstrations, "
        f"action noise {action_noise}"
    )
    if dataset_format == "lerobot":
        from craft_vla.data.lerobot_writer import LeRobotWriter

        writer, features = LeRobotWriter(out_dir, name, overwrite=overwrite), None  # workers send episodes
    else:
        writer = RLDSWriter(
            out_dir, name, features, version=DATASET_VERSION, overwrite=overwrite, description=description
        )
    add = writer.add if features is None else writer.add_serialized
    episodes = steps = 0
    failed: list[tuple[str, int]] = []
    try:
        for spec, record, num in iter_demonstrations(
            specs,
            split,
            image_size,
            workers,
            action_noise,
            features=features,
            progress=progress,
            config=config,
        ):
            if record is None:
                failed.append(spec)
                continue
            add(record)
            episodes, steps = episodes + 1, steps + num
    except BaseException:
        writer.abort()
        raise
    path = writer.close()
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return GenerationReport(path, episodes, steps, failed, time.perf_counter() - start, size)


@dataclass
class GenerateConfig:
    """`craft-vla data generate OUT_DIR`: expert demonstrations of the embedded tabletop suite as an RLDS
    dataset in OUT_DIR/<name>/1.0.0/ (--format lerobot: a LeRobot v3 root OUT_DIR/<name>/). Tasks: reach,
    pick_up, stack, unstack, place_side, place_corner, place_middle, place_relation, push_side. Splits: train,
    heldout."""

    out_dir: Path = Path("datasets/rlds")  # root directory; the dataset goes to <out_dir>/<name>/1.0.0/
    num_episodes_per_task: int = 40
    image_size: int = 64  # height and width of both views, px
    seed: int = 0  # episode i of a task uses seed + i
    workers: int = 1  # processes that run the expert and render
    split: str = "train"  # train | heldout
    tasks: tuple[str, ...] = TASK_NAMES
    action_noise: float = 0.0  # std of noise on the executed (dx, dy); the recorded action stays the expert's
    name: str | None = None  # dataset name (default: tabletop, or tabletop_<split>)
    overwrite: bool = False
    progress: bool = True
    format: str = "rlds"  # rlds: <out_dir>/<name>/1.0.0/ | lerobot: the LeRobot v3 root <out_dir>/<name>/

    def __post_init__(self) -> None:
        from craft_vla.sim.splits import SPLITS

        if self.format not in ("rlds", "lerobot"):
            raise ValueError(f"--format must be rlds or lerobot, got {self.format!r}")
        if self.num_episodes_per_task < 1:
            raise ValueError(f"--num_episodes_per_task must be at least 1, got {self.num_episodes_per_task}")
        if self.split not in SPLITS:
            raise ValueError(f"--split {self.split!r}: unknown split; choose from {SPLITS}")
        unknown = sorted(set(self.tasks) - set(TASK_NAMES))
        if unknown or not self.tasks:
            raise ValueError(f"--tasks: unknown tasks {unknown}; choose from {TASK_NAMES}")
        if self.workers < 1 or self.image_size < 16 or self.action_noise < 0:
            raise ValueError(
                f"--workers must be >= 1, --image_size >= 16 and --action_noise >= 0; got {self.workers}, "
                f"{self.image_size}, {self.action_noise}"
            )


def generate(cfg: GenerateConfig) -> GenerationReport:
    """Write the demonstrations `cfg` asks for; prints and returns the report."""
    report = write_demonstrations(
        cfg.out_dir,
        cfg.num_episodes_per_task,
        cfg.image_size,
        cfg.seed,
        cfg.workers,
        cfg.split,
        tuple(cfg.tasks),
        cfg.action_noise,
        cfg.name,
        cfg.overwrite,
        cfg.progress,
        dataset_format=cfg.format,
    )
    print(report.summary())
    return report
