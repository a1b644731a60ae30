"""The tabletop suite's environment backend of the closed loop: many environments batched in this process.

Episode i of a task is (task, seed + i) in the evaluator's split, from `EVAL_SEED` upwards, so
evaluation never replays a demonstration's scene. The environments are kept between runs so their
sprite caches stay warm; within a chunk only the observation after the last executed action is
rendered. Each observation is a dict

    full_image   (H, W, 3) uint8  third-person view
    wrist_image  (H, W, 3) uint8  wrist view
    state        (4,) float32     proprio (x, y, closed, holding)
    instruction  str
    suite, task, task_index, trial (the episode seed), step, env_index (which environment)

and a chunk holds (dx, dy, grip) actions in environment units.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from craft_vla.eval.closed_loop import ChunkPolicy, InlineHandle, Reply, run_episodes
from craft_vla.eval.results import EpisodeResult
from craft_vla.sim.env import DEFAULT_MAX_STEPS, TabletopEnv
from craft_vla.sim.episodes import EVAL_SEED
from craft_vla.sim.tasks import TASK_NAMES
from craft_vla.sim.world import ACTION_DIM, WorldConfig, step_world

ACTION_MEANING = "the tabletop's action is (dx, dy, grip)"


def tabletop_suite(split: str) -> str:
    """The suite name of a split's episodes in results: "tabletop_train", "tabletop_heldout"."""
    return f"tabletop_{split}"


class TabletopRunner:
    """The `EpisodeRunner` of one `TabletopEnv`: episode specs are (task, seed)."""

    def __init__(self, env: TabletopEnv, index: int) -> None:
        self.env, self.index = env, index
        self.started = 0.0

    def start(self, spec: tuple[str, int]) -> Reply:
        self.env.reset(*spec)
        self.started = time.perf_counter()
        return "obs", self._observation()

    def act(self, actions: np.ndarray) -> Reply:
        for action in actions:
            _, done, info = self.env.act(action)
            if done:
                episode = self.env.episode
                return "done", EpisodeResult(
                    suite=tabletop_suite(episode.split),
                    task_index=TASK_NAMES.index(episode.task),
                    task=episode.task,
                    instruction=episode.instruction,
                    trial=episode.seed,
                    success=info["success"],
                    steps=info["steps"],
                    seconds=time.perf_counter() - self.started,
                )
        return "obs", self._observation()

    def close(self) -> None:
        """Nothing to release: the environment stays, with its warm sprite caches, for the next run."""

    def _observation(self) -> dict[str, Any]:
        env, episode = self.env, self.env.episode
        obs = env.observation()
        return {
            "full_image": obs["image"],
            "wrist_image": obs["wrist_image"],
            "state": obs["state"],
            "instruction": episode.instruction,
            "suite": tabletop_suite(episode.split),
            "task": episode.task,
            "task_index": TASK_NAMES.index(episode.task),
            "trial": episode.seed,
            "step": env.steps,
            "env_index": self.index,
        }


class TabletopEvaluator:
    """`num_envs` environments of one split, kept between runs so their sprite caches stay warm."""

    def __init__(
        self,
        image_size: int = 64,
        split: str = "train",
        num_envs: int = 16,
        max_steps: int = DEFAULT_MAX_STEPS,
        config: WorldConfig | None = None,
    ) -> None:
        self.split = split
        self.envs = [TabletopEnv(image_size, split, max_steps, config=config) for _ in range(num_envs)]

    @property
    def suite(self) -> str:
        return tabletop_suite(self.split)

    def run(
        self,
        policy: ChunkPolicy,
        tasks: Sequence[str] = TASK_NAMES,
        episodes_per_task: int = 10,
        seed: int = EVAL_SEED,
        execute_steps: int | None = None,
        progress: bool = True,
    ) -> list[EpisodeResult]:
        """Episodes `seed .. seed + episodes_per_task - 1` of each task, closed loop, in that order.

        `execute_steps`: actions executed from each chunk before the policy replans (None: the whole chunk).
        """
        specs = [(task, seed + i) for task in tasks for i in range(episodes_per_task)]
        handles = [InlineHandle(TabletopRunner(env, i)) for i, env in enumerate(self.envs[: len(specs)])]
        desc = f"eval {self.split}"
        return run_episodes(specs, policy, handles, ACTION_DIM, ACTION_MEANING, execute_steps, progress, desc)


class ExpertChunkPolicy:
    """Reads the true scenes of `envs` (by "env_index") and answers with the expert's next `chunk` actions.

    A reference: the suite's ceiling for open-loop chunks of this length.
    """

    def __init__(self, envs: Sequence[TabletopEnv], chunk: int = 8) -> None:
        self.envs, self.chunk = envs, chunk

    def predict_chunks(self, observations: list[dict[str, Any]]) -> np.ndarray:
        chunks = []
        for obs in observations:
            env = self.envs[obs["env_index"]]
            episode, task = env.episode, env.tasks[env.episode.task]
            scene = episode.scene.copy()
            actions = []
            for _ in range(self.chunk):
                actions.append(task.expert(scene, episode.goal, env.config))
                step_world(scene, actions[-1], env.config)
            chunks.append(actions)
        return np.asarray(chunks, dtype=np.float32)
