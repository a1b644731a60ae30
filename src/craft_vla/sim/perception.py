"""Perception data: rendered scenes of the suite with questions, answers and dense per-cell labels.

Perception scenes use every (colour, shape) pair and every cell (the VLM is meant to know them
all; only the manipulation splits hold some out), and show the states manipulation produces: a
stack now and then, the gripper holding an object (lifted) or closed on the table. Scene i of a
set is drawn from the stream (seed, name, i), so sets with different `name`s ("train", "heldout",
...) never share a scene, and any subset can be regenerated alone.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from craft_vla.sim.questions import Question, region_labels, sample_questions
from craft_vla.sim.render import Renderer
from craft_vla.sim.scenes import sample_scene
from craft_vla.sim.world import (
    ACTION_DIM,
    STATE_DIM,
    Scene,
    WorldConfig,
    close_gripper,
    is_clear,
    move_gripper,
)

P_STACK, P_HOLD, P_CLOSED = 0.25, 0.3, 0.1


def sample_perception_scene(rng: np.random.Generator, config: WorldConfig) -> Scene:
    """A random scene in one of the states manipulation produces (see module docstring)."""
    scene = sample_scene(rng, config, None)
    if rng.random() < P_STACK:
        scene.position[0] = scene.position[1] + rng.uniform(-0.015, 0.015, 2)
        scene.support[0] = 1
    draw = rng.random()
    if draw < P_HOLD:
        clear = [i for i in range(scene.num_objects) if is_clear(scene, i)]
        target = clear[int(rng.integers(len(clear)))]
        scene.gripper = scene.position[target] + rng.uniform(-0.02, 0.02, 2)
        close_gripper(scene, config)
        move_gripper(scene, rng.uniform(0.05, 0.95, 2) - scene.gripper, config)
    elif draw < P_HOLD + P_CLOSED:
        close_gripper(scene, config)
    return scene


@dataclass
class PerceptionSet:
    """N rendered scenes with their questions and dense labels."""

    images: np.ndarray  # uint8 (N, H, W, 3), third-person view
    wrist_images: np.ndarray  # uint8 (N, H, W, 3)
    states: np.ndarray  # float32 (N, S), proprio
    questions: list[list[Question]]  # per scene
    labels: dict[str, np.ndarray]  # int64 (N, G, G) each, see `questions.region_labels`

    def __len__(self) -> int:
        return len(self.questions)

    def flat(self) -> list[tuple[int, Question]]:
        """Every (scene index, question) pair."""
        return [(i, q) for i, qs in enumerate(self.questions) for q in qs]


def make_perception_set(
    num_scenes: int,
    questions_per_scene: int = 8,
    seed: int = 0,
    name: str = "train",
    image_size: int = 64,
    weights: dict[str, float] | None = None,
    wrist_zoom: float = 2.5,
    config: WorldConfig | None = None,
    progress: bool = False,
) -> PerceptionSet:
    """Render `num_scenes` perception scenes and ask `questions_per_scene` questions about each."""
    config = config or WorldConfig()
    renderer = Renderer(image_size, wrist_zoom, config)
    images = np.empty((num_scenes, image_size, image_size, 3), dtype=np.uint8)
    wrist = np.empty_like(images)
    states = np.empty((num_scenes, STATE_DIM), dtype=np.float32)
    questions, labels = [], []
    stream = zlib.crc32(f"perception/{name}".encode())
    for i in tqdm(range(num_scenes), desc=f"perception {name}", unit="scene", disable=not progress):
        rng = np.random.default_rng([seed, stream, i])
        scene = sample_perception_scene(rng, config)
        images[i], wrist[i] = renderer.render(scene)
        states[i] = scene.proprio()
        questions.append(sample_questions(scene, questions_per_scene, rng, config, weights))
        labels.append(region_labels(scene, config.grid))
    stacked = {key: np.stack([lab[key] for lab in labels]) for key in (labels[0] if labels else ())}
    return PerceptionSet(images, wrist, states, questions, stacked)


def perception_episodes(perception: PerceptionSet, name: str) -> list[dict]:
    """Each (scene, question) pair as a one-step RLDS episode whose instruction is the question: inputs of
    the VLM's own kind for anchoring retention (issue 16). Actions are zero and carry no meaning; the answer
    is not stored."""
    episodes = []
    for k, (i, question) in enumerate(perception.flat()):
        flag = np.ones(1, dtype=bool)
        episodes.append(
            {
                "steps": {
                    "observation": {
                        "image": perception.images[i : i + 1],
                        "wrist_image": perception.wrist_images[i : i + 1],
                        "state": perception.states[i : i + 1],
                    },
                    "action": np.zeros((1, ACTION_DIM), dtype=np.float32),
                    "language_instruction": question.text,
                    "reward": np.zeros(1, dtype=np.float32),
                    "discount": np.ones(1, dtype=np.float32),
                    "is_first": flag,
                    "is_last": flag,
                    "is_terminal": flag,
                },
                "episode_metadata": {"file_path": f"perception/{name}/{k}"},
            }
        )
    return episodes
