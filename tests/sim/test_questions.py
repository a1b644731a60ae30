"""Perception questions and dense labels against a hand-built scene whose answers are written out by hand."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from craft_vla.sim.attributes import COLOURS, MATERIALS, SHAPES, SIZES
from craft_vla.sim.episodes import make_episode
from craft_vla.sim.perception import make_perception_set
from craft_vla.sim.questions import CATEGORIES, ask, region_labels, sample_questions
from craft_vla.sim.render import Renderer
from craft_vla.sim.vocabulary import answer_vocabulary, vocabulary
from craft_vla.sim.world import Scene, WorldConfig, step_world

CONFIG = WorldConfig()
# (colour, shape, size, material, position): cells aa, ab, dd, cc of the 4 × 4 grid
OBJECTS = [
    ("red", "cube", "large", "metal", (0.125, 0.875)),
    ("blue", "ball", "small", "rubber", (0.375, 0.875)),
    ("green", "pyramid", "small", "metal", (0.875, 0.125)),
    ("red", "ball", "large", "rubber", (0.625, 0.375)),
]


def hand_scene() -> Scene:
    return Scene(
        position=np.array([o[4] for o in OBJECTS], dtype=np.float64),
        colour=np.array([COLOURS.index(o[0]) for o in OBJECTS]),
        shape=np.array([SHAPES.index(o[1]) for o in OBJECTS]),
        size=np.array([SIZES.index(o[2]) for o in OBJECTS]),
        material=np.array([MATERIALS.index(o[3]) for o in OBJECTS]),
        support=np.full(len(OBJECTS), -1),
        gripper=np.array([0.6, 0.6]),
    )


def hand_answers() -> dict[str, str]:
    """Every question the hand scene can be asked, with its answer, written out."""
    answers = {}
    for (colour, shape, size, material, _), cell in zip(OBJECTS, ["aa", "ab", "dd", "cc"]):
        answers[f"what colour is the object in {cell}"] = colour
        answers[f"what shape is the object in {cell}"] = shape
        answers[f"what size is the object in {cell}"] = size
        answers[f"what material is the object in {cell}"] = material
        answers[f"what size is the {colour} {shape}"] = size
        answers[f"what material is the {colour} {shape}"] = material
        answers[f"where is the {colour} {shape}"] = cell
    answers |= {
        "what colour is the cube": "red",
        "what colour is the pyramid": "green",
        "what shape has the colour blue": "ball",
        "what shape has the colour green": "pyramid",
        "what colour is the object to the right of the red cube": "blue",
        "what colour is the object to the left of the blue ball": "red",
        "is the gripper holding something": "no",
        "where is the gripper": "bc",
        "how many objects are cubes": "one",
        "how many objects are balls": "two",
        "how many objects are pyramids": "one",
        "how many objects are small": "two",
        "how many objects are large": "two",
    }
    counts = {"red": "two", "blue": "one", "green": "one", "yellow": "zero", "purple": "zero", "cyan": "zero"}
    answers |= {f"how many objects are {c}": n for c, n in counts.items()}
    present = {(o[0], o[1]) for o in OBJECTS}
    answers |= {f"is there a {c} {s}": "yes" if (c, s) in present else "no" for c in COLOURS for s in SHAPES}
    return answers


@pytest.mark.parametrize("name", [c.name for c in CATEGORIES])
def test_every_category_answers_the_hand_scene_correctly(name):
    scene, expected = hand_scene(), hand_answers()
    asked = set()
    for seed in range(60):
        question = ask(scene, name, np.random.default_rng(seed), CONFIG)
        assert question is not None and question.category == name
        assert question.text in expected, question.text
        assert question.answer == expected[question.text], question.text
        asked.add(question.text)
    assert len(asked) >= (2 if name not in ("holding", "gripper_location") else 1)


def test_relevance_flags():
    relevant = {c.name for c in CATEGORIES if c.task_relevant}
    assert {"colour_at", "shape_at", "location", "colour_of", "shape_of"} <= relevant
    assert not {"size_at", "material_at", "size_of", "material_of", "count"} & relevant
    per_object = {c.name for c in CATEGORIES if c.per_object}
    assert len(per_object & relevant) >= 4 and len(per_object - relevant) >= 4


def test_holding_and_stacks_change_the_answers():
    scene = hand_scene()
    scene.gripper = scene.position[1].copy()
    step_world(scene, np.array([0.0, -1.0, 1.0]), CONFIG)  # grasp the blue ball, lift it and move down
    question = ask(scene, "holding", np.random.default_rng(0), CONFIG)
    assert question.answer == "yes"
    # stack the blue ball on the red cube: cell aa then holds two objects, cell ab none
    scene = hand_scene()
    scene.position[1] = scene.position[0]
    scene.support[1] = 0
    texts = {ask(scene, "colour_at", np.random.default_rng(s), CONFIG).text for s in range(40)}
    assert texts == {"what colour is the object in dd", "what colour is the object in cc"}
    labels = region_labels(scene, CONFIG.grid)
    assert labels["colour"][0, 0] == COLOURS.index("blue")  # the top of the stack is what is seen
    assert labels["colour"][0, 1] == len(COLOURS)


def test_dense_labels_of_the_hand_scene():
    labels = region_labels(hand_scene(), CONFIG.grid)
    colour = np.full((4, 4), len(COLOURS))
    colour[0, 0], colour[0, 1], colour[3, 3], colour[2, 2] = 0, 2, 1, 0
    np.testing.assert_array_equal(labels["colour"], colour)
    assert labels["shape"][0, 1] == SHAPES.index("ball") and labels["shape"][1, 1] == len(SHAPES)
    assert labels["size"][3, 3] == SIZES.index("small") and labels["material"][0, 0] == MATERIALS.index(
        "metal"
    )
    gripper = np.zeros((4, 4), dtype=np.int64)
    gripper[1, 2] = 1
    np.testing.assert_array_equal(labels["gripper"], gripper)
    assert all(v.dtype == np.int64 and v.shape == (4, 4) for v in labels.values())


def test_sampled_questions_follow_the_weights_and_use_the_vocabulary():
    scene, words, answers = hand_scene(), set(vocabulary()), set(answer_vocabulary())
    questions = sample_questions(scene, 600, np.random.default_rng(0), CONFIG)
    assert len(questions) == 600
    assert all(set(q.text.split()) <= words and q.answer in answers for q in questions)
    per_object = np.mean([q.per_object for q in questions])
    relevant = np.mean([q.task_relevant for q in questions])
    assert per_object > 0.7 and 0.3 < relevant < 0.8
    only = sample_questions(
        scene, 50, np.random.default_rng(0), CONFIG, weights={"size_at": 1.0, "count": 0.0}
    )
    assert Counter(q.category for q in only) == {"size_at": 50}


def test_perception_set_is_seeded():
    first = make_perception_set(40, 4, seed=3, image_size=64)
    again = make_perception_set(40, 4, seed=3, image_size=64)
    other = make_perception_set(40, 4, seed=3, name="heldout", image_size=64)
    np.testing.assert_array_equal(first.images, again.images)
    assert first.questions == again.questions
    assert not np.array_equal(first.images, other.images)
    assert first.images.shape == (40, 64, 64, 3) and first.wrist_images.shape == (40, 64, 64, 3)
    assert first.states.shape == (40, 4) and first.labels["colour"].shape == (40, 4, 4)
    assert len(first.flat()) == 160


def test_dense_labels_agree_with_the_rendered_image(nearest_colour):
    """The label of the cell an object is in is the colour seen at the object's centre (rows from the top)."""
    renderer = Renderer(64)
    for seed in range(10):
        scene = make_episode("place_side", seed).scene
        image = renderer.third_person(scene).astype(np.float64)
        labels = region_labels(scene, CONFIG.grid)
        for position in scene.position:
            row, col = int((1 - position[1]) * 4), int(position[0] * 4)
            pixel = image[int((1 - position[1]) * 64), int(position[0] * 64)]
            assert COLOURS[labels["colour"][row, col]] == nearest_colour(pixel)
