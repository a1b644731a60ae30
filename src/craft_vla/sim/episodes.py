"""Seeded episode set-up: (task, seed, split) -> initial scene, goal and instruction, always the same.

Seeds: demonstrations use seeds 0, 1, 2, ... (from the generation seed upwards); evaluation uses
seeds from EVAL_SEED upwards, so closed-loop evaluation never replays a demonstration's scene.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from craft_vla.sim.scenes import sample_scene
from craft_vla.sim.splits import variant
from craft_vla.sim.tasks import TARGET, Goal, Task, make_tasks
from craft_vla.sim.world import Scene, WorldConfig

EVAL_SEED = 1_000_000
MAX_SETUP_TRIES = 500
MIN_GRIPPER_DISTANCE = 0.2  # the gripper starts at least this far from the target


@dataclass
class Episode:
    """An episode's initial state and what it asks for."""

    task: str
    seed: int
    split: str
    scene: Scene
    goal: Goal
    instruction: str


def episode_rng(task: str, seed: int, split: str) -> np.random.Generator:
    """The random stream of one episode; independent across tasks, seeds and splits."""
    return np.random.default_rng([seed, zlib.crc32(f"{task}/{split}".encode())])


def make_episode(task: str, seed: int, split: str = "train", config: WorldConfig | None = None) -> Episode:
    """The initial scene, goal and instruction of episode `seed` of `task` in `split`."""
    config = config or WorldConfig()
    tasks = make_tasks()
    if task not in tasks:
        raise ValueError(f"unknown task {task!r}: expected one of {tuple(tasks)}")
    spec: Task = tasks[task]
    held_out = variant(split)
    rng = episode_rng(task, seed, split)
    for _ in range(MAX_SETUP_TRIES):
        scene = sample_scene(rng, config, held_out)
        goal = spec.setup(scene, rng, config)
        if goal is not None:
            break
    else:
        raise RuntimeError(
            f"no scene suits task {task!r} in split {split!r} after {MAX_SETUP_TRIES} tries (seed {seed})"
        )
    while np.linalg.norm(scene.gripper - scene.position[TARGET]) < MIN_GRIPPER_DISTANCE:
        scene.gripper = rng.uniform(0.05, 0.95, 2)
    templates = spec.heldout_templates if held_out.phrasing else spec.templates
    instruction = spec.instruction(scene, goal, templates[int(rng.integers(len(templates)))])
    return Episode(task, seed, split, scene, goal, instruction)
