"""`craft-vla eval libero`: closed-loop success rates on LIBERO and LIBERO-PRO suites.

Setup (tasks, initial states, episode specs) is separate from the run (the shared closed loop on
LIBERO's backend, `run_libero_episodes`) and the report (`results`); the policy is any `ChunkPolicy`,
so the evaluation never imports the model.
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from craft_vla.eval.closed_loop import ChunkPolicy
from craft_vla.eval.libero_episode import EpisodeSpec, run_libero_episodes
from craft_vla.eval.libero_suites import load_init_states, load_tasks
from craft_vla.eval.protocol import LiberoProtocol, max_episode_steps
from craft_vla.eval.results import results_document, write_results

VIDEO_FORMATS = ("auto", "mp4", "gif")


@dataclass
class LiberoEvalConfig:
    """The evaluation run; flag names follow VLA-Adapter's / OpenVLA-OFT's LIBERO eval where they exist."""

    suite: str = "libero_spatial"  # one suite or several joined by ",": "libero_spatial,libero_spatial_swap"
    tasks: str = ""  # task indices within each suite, e.g. "0" or "0,3,7"; empty: every task
    num_trials_per_task: int = 50  # trial k starts from initial state k
    num_envs: int = 1  # simulators (worker processes when > 1)
    num_open_loop_steps: int = 8
    num_steps_wait: int = 10  # settle steps
    max_steps: int = 0  # 0: the suite's published limit
    env_img_res: int = 256
    seed: int = 7
    save_videos: int = 0  # record the first N trials of each task
    video_format: str = "auto"  # auto (mp4 when imageio-ffmpeg is installed, else gif) | mp4 | gif
    out_dir: Path = Path("runs/eval_libero")
    progress: bool = True

    def suites(self) -> list[str]:
        return [s.strip().lower() for s in self.suite.split(",") if s.strip()]

    def task_indices(self) -> list[int]:
        try:
            return [int(t) for t in self.tasks.split(",") if t.strip()]
        except ValueError as err:
            raise ValueError(
                f"--tasks takes task indices joined by ',', e.g. 0,3,7; got {self.tasks!r}"
            ) from err

    def protocol(self) -> LiberoProtocol:
        return LiberoProtocol(
            env_resolution=self.env_img_res,
            settle_steps=self.num_steps_wait,
            num_open_loop_steps=self.num_open_loop_steps,
        )


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and (when the policy loaded it) torch."""
    random.seed(seed)
    np.random.seed(seed)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


def video_suffix(video_format: str) -> str:
    """The video file suffix: mp4 (needs imageio and imageio-ffmpeg), gif, or auto (mp4 when possible)."""
    if video_format not in VIDEO_FORMATS:
        raise ValueError(f"--video_format must be one of {VIDEO_FORMATS}, got {video_format!r}")
    try:
        import imageio  # noqa: F401
        import imageio_ffmpeg  # noqa: F401
    except ImportError as err:
        if video_format == "mp4":
            raise ImportError(
                f"mp4 videos need imageio and imageio-ffmpeg ({err}): pip install imageio imageio-ffmpeg, "
                "or pass --video_format gif"
            ) from err
        return "gif"
    return "gif" if video_format == "gif" else "mp4"


def build_episodes(config: LiberoEvalConfig) -> list[EpisodeSpec]:
    """Every (suite, task, trial) of the run, in order; refuses a task without enough initial states."""
    episodes = []
    suffix = video_suffix(config.video_format) if config.save_videos else ""
    for suite in config.suites():
        max_steps = config.max_steps or max_episode_steps(suite)
        tasks, chosen = load_tasks(suite), config.task_indices()
        unknown = sorted(set(chosen) - set(range(len(tasks))))
        if unknown:
            raise ValueError(f"--tasks {unknown} not in suite {suite!r}, which has tasks 0..{len(tasks) - 1}")
        for task in tasks:
            if chosen and task.index not in chosen:
                continue
            states = load_init_states(task, config.num_trials_per_task)
            for trial, state in enumerate(states):
                video = ""
                if trial < config.save_videos:
                    name = f"{suite}--task{task.index:02d}--trial{trial:02d}.{suffix}"
                    video = str(config.out_dir / "videos" / name)
                episodes.append(
                    EpisodeSpec(
                        suite=suite,
                        task_index=task.index,
                        task=task.name,
                        instruction=task.instruction,
                        trial=trial,
                        init_state=state,
                        bddl_file=task.bddl_file,
                        max_steps=max_steps,
                        video_path=video,
                    )
                )
    return episodes


def evaluate_libero(
    policy: ChunkPolicy,
    config: LiberoEvalConfig,
    env_factory: Any = None,
    policy_info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the evaluation, write results.json and results.md into `config.out_dir`; returns the document."""
    from craft_vla.eval.libero_env import LiberoEnvFactory

    protocol = config.protocol()
    episodes = build_episodes(config)
    seed_everything(config.seed)
    env_factory = env_factory or LiberoEnvFactory(config.env_img_res)
    started = time.perf_counter()
    results = run_libero_episodes(
        episodes,
        policy,
        env_factory,
        protocol,
        num_envs=config.num_envs,
        progress=config.progress,
        desc=config.suite,
    )
    wall = time.perf_counter() - started
    run_config = {
        **asdict(config),
        "out_dir": str(config.out_dir),
        "protocol": asdict(protocol),
        "policy": {"class": type(policy).__name__, **(policy_info or {})},
    }
    document = results_document(results, run_config)
    document["timing"] = {
        "wall_seconds": wall,
        "episodes": len(results),
        "mean_episode_seconds": float(np.mean([r.seconds for r in results])) if results else 0.0,
        # episode time over policy steps, reset and settle steps included
        "mean_step_seconds": sum(r.seconds for r in results) / max(1, sum(r.steps for r in results)),
    }
    write_results(document, config.out_dir)
    return document
