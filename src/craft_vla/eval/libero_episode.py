"""One closed-loop LIBERO episode, driven a chunk at a time.

`EpisodeWorker` owns one simulator (created by an env factory, reused while the scene stays the
same) and runs the protocol's episode: seed, reset, initial state k, settle steps, then the executed
actions of each chunk until success or the step limit. It never sees the policy: the caller sends
environment actions and receives the next observation, so the same worker serves the in-process
loop and the worker processes of `craft_vla.eval.parallel`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from craft_vla.eval.libero_env import observe, rendering_error
from craft_vla.eval.protocol import LiberoProtocol, rotate_180
from craft_vla.eval.results import EpisodeResult, write_video

# What a worker answers: ("obs", observation dict) when it waits for actions, ("done", EpisodeResult).
Reply = tuple[str, Any]


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

    @property
    def key(self) -> tuple[str, int, int]:
        return self.suite, self.task_index, self.trial


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
            env.seed(self.protocol.env_seed)  # before every reset, so an episode never depends on the previous ones
            env.reset()
            raw = env.set_init_state(spec.init_state)
            for _ in range(self.protocol.settle_steps):
                raw, _, _, _ = env.step(list(self.protocol.settle_action))
            return self._observation(raw)
        except Exception as err:  # noqa: BLE001  (the protocol counts any episode error as a failure)
            return self._finish(False, err)

    def act(self, actions: np.ndarray) -> Reply:
        """Execute (k, A) environment actions in order; stop early on success or at the step limit."""
        try:
            for action in actions:
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
        return "obs", {**observe(raw, self.protocol), "step": self.steps}

    def _finish(self, success: bool, error: BaseException | None = None) -> Reply:
        spec, frames, self.frames = self.spec, self.frames, []
        if spec.video_path and frames:
            write_video(frames, spec.video_path)
        result = EpisodeResult(
            suite=spec.suite, task_index=spec.task_index, task=spec.task, instruction=spec.instruction,
            trial=spec.trial, success=success, steps=self.steps, seconds=time.perf_counter() - self.started,
            error="" if error is None else f"{type(error).__name__}: {error}",
        )
        return "done", result

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
        self.env, self.scene = None, ""
