"""Closed-loop evaluation of a chunking policy on the suite, many environments batched in one process.

The policy sees a batch of N observations and returns N action chunks (N, T, A) in environment
units; each chunk is executed open loop (its first `execute_steps` actions, all by default), and
only the observation after the chunk is rendered. Episode (task, seed) pairs are fixed by the
arguments, so outcomes do not depend on `num_envs` for a policy whose answer for one observation
does not depend on the rest of the batch.

Observation batch: {"image": uint8 (N, H, W, 3), "wrist_image": uint8 (N, H, W, 3),
"state": float32 (N, S), "instruction": list[str], "task": list[str], "env_index": int64 (N,)}.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from tqdm import tqdm

from craft_vla.sim.env import DEFAULT_MAX_STEPS, TabletopEnv
from craft_vla.sim.episodes import EVAL_SEED
from craft_vla.sim.tasks import TASK_NAMES
from craft_vla.sim.world import ACTION_DIM, WorldConfig, step_world

ChunkPolicy = Callable[[dict], "np.ndarray"]


@dataclass(frozen=True)
class EpisodeOutcome:
    task: str
    seed: int
    instruction: str
    success: bool
    steps: int


@dataclass
class EvaluationResult:
    """Every episode's outcome, with success rates per task and overall."""

    split: str
    outcomes: list[EpisodeOutcome]

    def success_rate(self, task: str | None = None) -> float:
        chosen = [o.success for o in self.outcomes if task is None or o.task == task]
        return float(np.mean(chosen)) if chosen else float("nan")

    def per_task(self) -> dict[str, float]:
        tasks = dict.fromkeys(o.task for o in self.outcomes)
        return {task: self.success_rate(task) for task in tasks}

    def to_dict(self) -> dict:
        return {
            "split": self.split,
            "success_rate": self.success_rate(),
            "per_task": self.per_task(),
            "episodes": [asdict(o) for o in self.outcomes],
        }


class Evaluator:
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

    def run(
        self,
        policy: ChunkPolicy,
        tasks: Sequence[str] = TASK_NAMES,
        episodes_per_task: int = 10,
        seed: int = EVAL_SEED,
        execute_steps: int | None = None,
        progress: bool = True,
    ) -> EvaluationResult:
        """Run episodes `seed .. seed + episodes_per_task - 1` of each task closed loop; report success."""
        specs = [(task, seed + i) for task in tasks for i in range(episodes_per_task)]
        queue = deque(specs)
        envs = self.envs[: len(specs)]
        observations: list[dict | None] = [None] * len(envs)
        outcomes: list[EpisodeOutcome] = []
        bar = tqdm(total=len(specs), desc=f"eval {self.split}", unit="ep", disable=not progress, leave=False)

        def start(slot: int) -> None:
            observations[slot] = envs[slot].reset(*queue.popleft()) if queue else None

        for slot in range(len(envs)):
            start(slot)
        while any(obs is not None for obs in observations):
            active = [slot for slot, obs in enumerate(observations) if obs is not None]
            chunks = _as_chunks(policy(_batch(envs, observations, active)), len(active))
            for row, slot in enumerate(active):
                env = envs[slot]
                for action in chunks[row, :execute_steps]:
                    _, done, info = env.act(action)
                    if done:
                        episode = env.episode
                        outcome = EpisodeOutcome(
                            episode.task, episode.seed, episode.instruction, info["success"], info["steps"]
                        )
                        outcomes.append(outcome)
                        bar.update(1)
                        start(slot)
                        break
                else:
                    observations[slot] = env.observation()
        bar.close()
        order = {spec: k for k, spec in enumerate(specs)}
        outcomes.sort(key=lambda o: order[(o.task, o.seed)])
        return EvaluationResult(self.split, outcomes)


def evaluate_policy(
    policy: ChunkPolicy,
    tasks: Sequence[str] = TASK_NAMES,
    episodes_per_task: int = 10,
    split: str = "train",
    seed: int = EVAL_SEED,
    image_size: int = 64,
    num_envs: int = 16,
    max_steps: int = DEFAULT_MAX_STEPS,
    execute_steps: int | None = None,
    progress: bool = True,
) -> EvaluationResult:
    """One-off `Evaluator(...).run(...)`; keep an Evaluator to evaluate many policies."""
    evaluator = Evaluator(image_size, split, num_envs, max_steps)
    return evaluator.run(policy, tasks, episodes_per_task, seed, execute_steps, progress)


def expert_chunk_policy(envs: Sequence[TabletopEnv], chunk: int = 8) -> ChunkPolicy:
    """A policy that reads the true scenes of `envs` (by "env_index") and returns the expert's next `chunk` actions.

    A reference: the suite's ceiling for open-loop chunks of this length.
    """

    def policy(batch: dict) -> np.ndarray:
        chunks = []
        for slot in batch["env_index"]:
            env = envs[int(slot)]
            episode, task = env.episode, env.tasks[env.episode.task]
            scene = episode.scene.copy()
            actions = []
            for _ in range(chunk):
                actions.append(task.expert(scene, episode.goal, env.config))
                step_world(scene, actions[-1], env.config)
            chunks.append(actions)
        return np.asarray(chunks, dtype=np.float32)

    return policy


def _batch(envs: list[TabletopEnv], observations: list[dict | None], active: list[int]) -> dict:
    first = observations[active[0]]
    batch = {key: np.stack([observations[slot][key] for slot in active]) for key in first}
    batch["instruction"] = [envs[slot].instruction for slot in active]
    batch["task"] = [envs[slot].episode.task for slot in active]
    batch["env_index"] = np.asarray(active, dtype=np.int64)
    return batch


def _as_chunks(actions: object, num: int) -> np.ndarray:
    """The policy's answer as a float array (N, T, A), or a clear error."""
    if hasattr(actions, "detach"):
        actions = actions.detach().cpu().float().numpy()
    actions = np.asarray(actions, dtype=np.float64)
    if actions.ndim != 3 or actions.shape[0] != num or actions.shape[2] != ACTION_DIM:
        raise ValueError(
            f"the policy must return action chunks of shape (N={num}, T, A={ACTION_DIM}), got {actions.shape}; "
            "a single action per observation is a chunk of length 1: add the axis with actions[:, None]"
        )
    return actions
