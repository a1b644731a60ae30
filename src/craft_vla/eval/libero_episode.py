"""LIBERO's environment backend of the closed loop: one episode, driven a chunk at a time.

`EpisodeWorker` owns one simulator (created by an env factory, reused while the scene stays the
same) and runs the protocol's episode: seed, reset, initial state k, settle steps, then the executed
actions of each chunk, gripper mapped to the environment's convention, until success or the step
limit. It is the `EpisodeRunner` of `craft_vla.eval.closed_loop`, in this process or in the worker
processes of `craft_vla.eval.parallel`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from craft_vla.eval.closed_loop import ChunkPolicy, Reply, run_episodes
from craft_vla.eval.libero_env import observe, rendering_error
from craft_vla.eval.parallel import start_handles
from craft_vla.eval.protocol import LiberoProtocol, gripper_to_env, rotate_180
from craft_vla.eval.results import EpisodeResult, write_video

ACTION_MEANING = (
    "LIBERO's action is 6 delta EEF dims + gripper; evaluate a checkpoint trained on a LIBERO dataset"
)


@dataclass(frozen=True)
class EpisodeSpec:
    """Everything that determines one episode apart from the policy."""

    suite: str
    task_index: int
    task: str
    instruction: str
    trial: int  # initial state index
    init_state: np.ndarray  # (state_dim,) flattened MuJoCo state
    bddl_file: str
    max_steps: int
    video_path: str = ""  # record the agent-view frames here when set


class EpisodeWorker:
    """Runs episodes on one simulator, one chunk of actions per call."""

    def __init__(self, env_factory: Callable[[str], Any], protocol: LiberoProtocol) -> None:
        self.env_factory = env_factory
        self.protocol = protocol
        self.env: Any = None
        self.scene = ""
        self.spec: EpisodeSpec | None = None
        self.steps = 0
        self.frames: list[np.ndarray] = []
        self.started = 0.0

    def _env_for(self, bddl_file: str) -> Any:
        """The simulator for a scene; created once and reused for every episode of that scene."""
        if self.scene != bddl_file:
            self.close()
            try:
                self.env = self.env_factory(bddl_file)
            except Exception as err:
                explained = rendering_error(err)
                if explained is None:
                    raise
                raise explained from err
            self.scene = bddl_file
        return self.env

    def start(self, spec: EpisodeSpec) -> Reply:
        """Reset to the episode's initial state and let objects settle; returns the first observation.

        Errors creating the simulator propagate (they would fail every episode); an error after that
        ends this episode as a failure.
        """
        self.spec, self.steps, self.frames, self.started = spec, 0, [], time.perf_counter()
        env = self._env_for(spec.bddl_file)
        try:
            env.seed(self.protocol.env_seed)  # before every reset: no episode depends on the ones before
            env.reset()
            raw = env.set_init_state(spec.init_state)
            for _ in range(self.protocol.settle_steps):
                raw, _, _, _ = env.step(list(self.protocol.settle_action))
            return self._observation(raw)
        except Exception as err:  # noqa: BLE001  (the protocol counts any episode error as a failure)
            return self._finish(False, err)

    def act(self, actions: np.ndarray) -> Reply:
        """Execute (k, A) policy actions (gripper in [0, 1]) in order; stop at success or the step limit."""
        try:
            for action in gripper_to_env(actions):
                raw, _, done, _ = self.env.step(np.asarray(action, dtype=np.float64).tolist())
                self.steps += 1
                self._record(raw)
                if done:
                    return self._finish(True)
                if self.steps >= self.spec.max_steps:
                    return self._finish(False)
            return self._observation(raw)
        except Exception as err:  # noqa: BLE001
            return self._finish(False, err)

    def _record(self, raw: dict[str, np.ndarray]) -> None:
        if self.spec.video_path:
            self.frames.append(rotate_180(raw["agentview_image"]))

    def _observation(self, raw: dict[str, np.ndarray]) -> Reply:
        if self.steps == 0:
            self._record(raw)
        spec = self.spec
        return "obs", {
            **observe(raw, self.protocol),
            "instruction": spec.instruction,
            "suite": spec.suite,
            "task_index": spec.task_index,
            "trial": spec.trial,
            "step": self.steps,
        }

    def _finish(self, success: bool, error: BaseException | None = None) -> Reply:
        spec, frames, self.frames = self.spec, self.frames, []
        if spec.video_path and frames:
            write_video(frames, spec.video_path)
        result = EpisodeResult(
            suite=spec.suite,
            task_index=spec.task_index,
            task=spec.task,
            instruction=spec.instruction,
            trial=spec.trial,
            success=success,
            steps=self.steps,
            seconds=time.perf_counter() - self.started,
            error="" if error is None else f"{type(error).__name__}: {error}",
        )
        return "done", result

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
        self.env, self.scene = None, ""


def run_libero_episodes(
    episodes: Sequence[EpisodeSpec],
    policy: ChunkPolicy,
    env_factory: Callable[[str], Any],
    protocol: LiberoProtocol,
    num_envs: int = 1,
    progress: bool = True,
    desc: str = "eval",
) -> list[EpisodeResult]:
    """Every episode closed loop on `num_envs` simulators (worker processes when more than one), in order.

    Consecutive episodes of one task reuse a worker's simulator.
    """
    if num_envs < 1:
        raise ValueError(f"num_envs must be at least 1, got {num_envs}")
    if not episodes:
        return []
    make_worker = functools.partial(EpisodeWorker, env_factory, protocol)
    handles = start_handles(make_worker, min(num_envs, len(episodes)))
    return run_episodes(
        episodes,
        policy,
        handles,
        len(protocol.settle_action),
        ACTION_MEANING,
        protocol.num_open_loop_steps,
        progress,
        desc,
    )
