"""The closed-loop environment: reset a task from a seed, step continuous actions, check success.

Observation: {"image": uint8 (H, W, 3) third-person view, "wrist_image": uint8 (H, W, 3),
"state": float32 (S,) proprio}; without rendering only "state". Actions (A,) and the proprio
layout are defined in `world`. An episode ends at success or after `max_steps` steps.
"""

from __future__ import annotations

import numpy as np

from craft_vla.sim.episodes import Episode, make_episode
from craft_vla.sim.render import Renderer
from craft_vla.sim.tasks import make_tasks
from craft_vla.sim.world import ACTION_DIM, WorldConfig, step_world

DEFAULT_MAX_STEPS = 60  # about twice the longest expert episode


class TabletopEnv:
    """One tabletop episode at a time."""

    def __init__(
        self,
        image_size: int = 64,
        split: str = "train",
        max_steps: int = DEFAULT_MAX_STEPS,
        render: bool = True,
        wrist_zoom: float = 2.5,
        config: WorldConfig | None = None,
    ) -> None:
        self.config = config or WorldConfig()
        self.split, self.max_steps = split, max_steps
        self.renderer = Renderer(image_size, wrist_zoom, self.config) if render else None
        self.tasks = make_tasks()
        self.episode: Episode | None = None
        self.steps = 0

    @property
    def instruction(self) -> str:
        return self._current().instruction

    def reset(self, task: str, seed: int) -> dict[str, np.ndarray]:
        """Start episode `seed` of `task` (same seed, same scene and instruction); returns the observation."""
        self.episode = make_episode(task, seed, self.split, self.config)
        self.steps = 0
        return self.observation()

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, dict]:
        """Apply one action (A,); returns (observation, reward, done, info) with reward 1 on success."""
        reward, done, info = self.act(action)
        return self.observation(), reward, done, info

    def act(self, action: np.ndarray) -> tuple[float, bool, dict]:
        """`step` without rendering the observation: (reward, done, info). Chunks
        executed open loop use it."""
        episode = self._current()
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (ACTION_DIM,) or not np.all(np.isfinite(action)):
            raise ValueError(
                f"expected a finite action of shape ({ACTION_DIM},) = (dx, dy, grip), got {action!r}"
            )
        step_world(episode.scene, action, self.config)
        self.steps += 1
        success = self.success()
        done = success or self.steps >= self.max_steps
        return float(success), done, {"success": success, "steps": self.steps}

    def success(self) -> bool:
        episode = self._current()
        return bool(self.tasks[episode.task].success(episode.scene, episode.goal, self.config))

    def expert_action(self) -> np.ndarray:
        """The scripted expert's action (A,) float32 in the current state."""
        episode = self._current()
        return self.tasks[episode.task].expert(episode.scene, episode.goal, self.config)

    def observation(self) -> dict[str, np.ndarray]:
        scene = self._current().scene
        obs = {"state": scene.proprio()}
        if self.renderer is not None:
            obs["image"], obs["wrist_image"] = self.renderer.render(scene)
        return obs

    def _current(self) -> Episode:
        if self.episode is None:
            raise RuntimeError("call reset(task, seed) before using the environment")
        return self.episode
