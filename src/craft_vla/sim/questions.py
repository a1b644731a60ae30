"""Perception questions about a scene, answered exactly from its state with one word each.

Every question has a category; each category says whether the manipulation tasks need that kind
of knowledge (`task_relevant`: the colour, shape and place of objects, relations, the gripper)
or not (size, material and counts, which no instruction ever mentions), and whether it asks about
one object (`per_object`, learnable from local evidence by a small ViT) or about the whole scene.
Texts are lower case without punctuation and end with the question's argument where possible.
`region_labels` gives dense per-cell labels of the same scene for a side loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from craft_vla.sim.attributes import COLOURS, MATERIALS, NUMBERS, SHAPE_PLURALS, SHAPES, SIZES, object_name
from craft_vla.sim.layout import RELATION_PHRASES, RELATIONS, cell_centre, cell_name, cell_of, relation_holds
from craft_vla.sim.world import Scene, WorldConfig, heights

YES_NO = ("no", "yes")


@dataclass(frozen=True)
class Question:
    text: str
    answer: str
    category: str
    task_relevant: bool
    per_object: bool


@dataclass(frozen=True)
class Category:
    name: str
    task_relevant: bool
    per_object: bool
    templates: tuple[str, ...]


CATEGORIES = (
    Category("colour_at", True, True, ("what colour is the object in {cell}",)),
    Category("shape_at", True, True, ("what shape is the object in {cell}",)),
    Category("colour_of", True, True, ("what colour is the {shape}",)),
    Category("shape_of", True, True, ("what shape has the colour {colour}",)),
    Category("location", True, True, ("where is the {object}",)),
    Category("size_at", False, True, ("what size is the object in {cell}",)),
    Category("material_at", False, True, ("what material is the object in {cell}",)),
    Category("size_of", False, True, ("what size is the {object}",)),
    Category("material_of", False, True, ("what material is the {object}",)),
    Category("relation", True, False, ("what colour is the object {relation} the {object}",)),
    Category("holding", True, False, ("is the gripper holding something",)),
    Category("gripper_location", True, False, ("where is the gripper",)),
    Category("exists", True, False, ("is there a {object}",)),
    Category(
        "count",
        False,
        False,
        ("how many objects are {shapes}", "how many objects are {colour}", "how many objects are {size}"),
    ),
)
PER_OBJECT_WEIGHT, GLOBAL_WEIGHT = 3.0, 1.0


def category(name: str) -> Category:
    for c in CATEGORIES:
        if c.name == name:
            return c
    raise ValueError(f"unknown question category {name!r}: expected one of {[c.name for c in CATEGORIES]}")


def default_weights() -> dict[str, float]:
    """Per-object categories three times as often as global ones (DEMO_NOTES: global ones learn slowly)."""
    return {c.name: PER_OBJECT_WEIGHT if c.per_object else GLOBAL_WEIGHT for c in CATEGORIES}


def occupants(scene: Scene, grid: int) -> dict[tuple[int, int], list[int]]:
    """Objects by the grid cell their centre lies in."""
    cells: dict[tuple[int, int], list[int]] = {}
    for i in range(scene.num_objects):
        cells.setdefault(cell_of(scene.position[i], grid), []).append(i)
    return cells


def region_labels(scene: Scene, grid: int) -> dict[str, np.ndarray]:
    """Dense labels (grid, grid) int64 of the object seen at each cell (the highest whose centre is in it).

    Keys "colour", "shape", "size", "material": the attribute index, or the number of values of
    that attribute (6 for colour) where the cell is empty; "gripper": 1 at the gripper's cell.
    """
    attributes = {
        "colour": (scene.colour, COLOURS),
        "shape": (scene.shape, SHAPES),
        "size": (scene.size, SIZES),
    }
    attributes["material"] = (scene.material, MATERIALS)
    labels = {
        key: np.full((grid, grid), len(values), dtype=np.int64) for key, (_, values) in attributes.items()
    }
    height = heights(scene)
    for (row, col), objects in occupants(scene, grid).items():
        centre = cell_centre(row, col, grid)
        seen = max(objects, key=lambda i: (height[i], -np.linalg.norm(scene.position[i] - centre)))
        for key, (values, _) in attributes.items():
            labels[key][row, col] = values[seen]
    labels["gripper"] = np.zeros((grid, grid), dtype=np.int64)
    labels["gripper"][cell_of(scene.gripper, grid)] = 1
    return labels


def ask(scene: Scene, name: str, rng: np.random.Generator, config: WorldConfig) -> Question | None:
    """A random question of category `name` about `scene`, or None if the scene offers none."""
    spec = category(name)
    made = _ASKERS[name](scene, rng, config.grid)
    if made is None:
        return None
    slots, answer = made
    choice = slots.pop("template") if "template" in slots else int(rng.integers(len(spec.templates)))
    text = spec.templates[choice].format_map(_Slots(slots))
    return Question(text, answer, name, spec.task_relevant, spec.per_object)


def sample_questions(
    scene: Scene,
    num: int,
    rng: np.random.Generator,
    config: WorldConfig,
    weights: dict[str, float] | None = None,
) -> list[Question]:
    """`num` questions, categories drawn by `weights` (default `default_weights()`; a category with
    weight 0 is never asked); a category the scene offers nothing for is redrawn."""
    weights = default_weights() if weights is None else weights
    names = [n for n, w in weights.items() if w > 0]
    probs = np.asarray([weights[n] for n in names], dtype=np.float64)
    probs /= probs.sum()
    questions: list[Question] = []
    for _ in range(50 * num):
        if len(questions) == num:
            break
        question = ask(scene, names[int(rng.choice(len(names), p=probs))], rng, config)
        if question is not None:
            questions.append(question)
    return questions


class _Slots(dict):
    """Template slots; `object` is derived from the colour and shape slots."""

    def __missing__(self, key: str) -> str:
        if key == "object":
            return object_name(self["colour_index"], self["shape_index"])
        raise KeyError(key)


Asked = tuple[dict, str] | None


def _single_cell(scene: Scene, rng: np.random.Generator, grid: int) -> tuple[str, int] | None:
    """A random cell holding exactly one object: (cell name, object index)."""
    singles = [(cell, objs[0]) for cell, objs in occupants(scene, grid).items() if len(objs) == 1]
    if not singles:
        return None
    (row, col), index = singles[int(rng.integers(len(singles)))]
    return cell_name(row, col), index


def _attribute_at(values_of: Callable[[Scene], np.ndarray], words: tuple[str, ...]) -> Callable:
    def asker(scene: Scene, rng: np.random.Generator, grid: int) -> Asked:
        found = _single_cell(scene, rng, grid)
        if found is None:
            return None
        cell, index = found
        return {"cell": cell}, words[values_of(scene)[index]]

    return asker


def _attribute_of(values_of: Callable[[Scene], np.ndarray], words: tuple[str, ...]) -> Callable:
    def asker(scene: Scene, rng: np.random.Generator, grid: int) -> Asked:
        index = int(rng.integers(scene.num_objects))
        return _object_slots(scene, index), words[values_of(scene)[index]]

    return asker


def _object_slots(scene: Scene, index: int) -> dict:
    colour, shape = int(scene.colour[index]), int(scene.shape[index])
    return {"colour_index": colour, "shape_index": shape, "colour": COLOURS[colour], "shape": SHAPES[shape]}


def _unique_by(values: np.ndarray, rng: np.random.Generator) -> int | None:
    """A random object whose value (colour or shape) no other object shares."""
    counts = np.bincount(values)
    unique = [i for i in range(len(values)) if counts[values[i]] == 1]
    return None if not unique else unique[int(rng.integers(len(unique)))]


def _colour_of(scene: Scene, rng: np.random.Generator, grid: int) -> Asked:
    index = _unique_by(scene.shape, rng)
    return None if index is None else ({"shape": SHAPES[scene.shape[index]]}, COLOURS[scene.colour[index]])


def _shape_of(scene: Scene, rng: np.random.Generator, grid: int) -> Asked:
    index = _unique_by(scene.colour, rng)
    return None if index is None else ({"colour": COLOURS[scene.colour[index]]}, SHAPES[scene.shape[index]])


def _location(scene: Scene, rng: np.random.Generator, grid: int) -> Asked:
    index = int(rng.integers(scene.num_objects))
    return _object_slots(scene, index), cell_name(*cell_of(scene.position[index], grid))


def _relation(scene: Scene, rng: np.random.Generator, grid: int) -> Asked:
    """Colour of the one object `relation` of a reference object; only asked when exactly one qualifies."""
    options = []
    for ref in range(scene.num_objects):
        for relation in RELATIONS:
            hits = [
                i
                for i in range(scene.num_objects)
                if i != ref and relation_holds(scene.position[i], scene.position[ref], relation)
            ]
            if len(hits) == 1:
                options.append((ref, relation, hits[0]))
    if not options:
        return None
    ref, relation, hit = options[int(rng.integers(len(options)))]
    return {**_object_slots(scene, ref), "relation": RELATION_PHRASES[relation]}, COLOURS[scene.colour[hit]]


def _holding(scene: Scene, rng: np.random.Generator, grid: int) -> Asked:
    return {}, YES_NO[int(scene.held >= 0)]


def _gripper_location(scene: Scene, rng: np.random.Generator, grid: int) -> Asked:
    return {}, cell_name(*cell_of(scene.gripper, grid))


def _exists(scene: Scene, rng: np.random.Generator, grid: int) -> Asked:
    """Half the time an object of the scene, half the time a (colour, shape) pair it lacks."""
    present = set(zip(scene.colour.tolist(), scene.shape.tolist()))
    if rng.random() < 0.5:
        colour, shape = sorted(present)[int(rng.integers(len(present)))]
    else:
        absent = [(c, s) for c in range(len(COLOURS)) for s in range(len(SHAPES)) if (c, s) not in present]
        colour, shape = absent[int(rng.integers(len(absent)))]
    slots = {"colour_index": colour, "shape_index": shape}
    return slots, YES_NO[int((colour, shape) in present)]


def _count(scene: Scene, rng: np.random.Generator, grid: int) -> Asked:
    """How many objects have a random shape, colour or size (templates in that order)."""
    kind = int(rng.integers(3))
    values, words, slot = (
        (scene.shape, SHAPE_PLURALS, "shapes"),
        (scene.colour, COLOURS, "colour"),
        (scene.size, SIZES, "size"),
    )[kind]
    value = int(rng.integers(len(words)))
    return {"template": kind, slot: words[value]}, NUMBERS[int(np.sum(values == value))]


_ASKERS: dict[str, Callable[[Scene, np.random.Generator, int], Asked]] = {
    "colour_at": _attribute_at(lambda s: s.colour, COLOURS),
    "shape_at": _attribute_at(lambda s: s.shape, SHAPES),
    "size_at": _attribute_at(lambda s: s.size, SIZES),
    "material_at": _attribute_at(lambda s: s.material, MATERIALS),
    "colour_of": _colour_of,
    "shape_of": _shape_of,
    "size_of": _attribute_of(lambda s: s.size, SIZES),
    "material_of": _attribute_of(lambda s: s.material, MATERIALS),
    "location": _location,
    "relation": _relation,
    "holding": _holding,
    "gripper_location": _gripper_location,
    "exists": _exists,
    "count": _count,
}
