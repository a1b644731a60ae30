"""The language-conditioned manipulation tasks: how each picks its goal, checks success, and is solved.

A task names its objects by colour and shape ("put the red cube on the blue ball"). Object 0 of
the scene is the target; tasks with a reference object use object 1. Every task has training
phrasings and held-out phrasings (`splits`). Success is checked from the scene state only.

| task           | success (checked on the state)                                   | expert |
| -------------- | ---------------------------------------------------------------- | ------ |
| reach          | open gripper over the target                                     | hover  |
| pick_up        | target held                                                      | grasp  |
| stack          | target let go resting on the reference                           | carry  |
| unstack        | target (starts on the reference) let go on the table             | carry  |
| place_side     | target let go in a side band (left, right, top, bottom)          | carry  |
| place_corner   | target let go in a corner (top left, ...)                        | carry  |
| place_middle   | target let go in the middle square                               | carry  |
| place_relation | target on the table left of/right of/above/below the reference   | carry  |
| push_side      | target in a side band, never grasped                             | push   |
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from craft_vla.sim import experts
from craft_vla.sim.attributes import object_name
from craft_vla.sim.layout import (
    CENTRE,
    CORNERS,
    RELATION_PHRASES,
    RELATIONS,
    SIDES,
    direction,
    in_region,
    region_goal,
    relation_holds,
)
from craft_vla.sim.scenes import free_spot
from craft_vla.sim.world import Scene, WorldConfig

TARGET, REFERENCE = 0, 1
MIN_TRAVEL = 0.1  # the expert's goal spot lies at least this far from where the target starts
RELATION_GAP = 0.04  # gap between the discs when the expert puts one object next to another
PUSH_CLEARANCE = 0.01  # extra gap the lane of a push keeps from other objects


@dataclass(frozen=True)
class Goal:
    """What one episode asks for."""

    target: int = TARGET
    reference: int = -1
    word: str = ""  # side, corner or relation word
    point: tuple[float, float] | None = None  # where the expert puts the target's centre


class Task:
    """A task: choose a goal for a scene, phrase it, check it, solve it."""

    name: str = ""
    templates: tuple[str, ...] = ()
    heldout_templates: tuple[str, ...] = ()
    objects_needed: int = 1  # the target, and the reference object where the task has one

    def setup(self, scene: Scene, rng: np.random.Generator, config: WorldConfig) -> Goal | None:
        """A goal for `scene` (which it may rearrange), or None if the scene does not suit the task."""
        return Goal()

    def success(self, scene: Scene, goal: Goal, config: WorldConfig) -> bool:
        raise NotImplementedError

    def expert(self, scene: Scene, goal: Goal, config: WorldConfig) -> np.ndarray:
        """The expert's action (A,) in this state."""
        return experts.carry(scene, goal.target, np.asarray(goal.point), config)

    def instruction(self, scene: Scene, goal: Goal, template: str) -> str:
        def name(i: int) -> str:
            return object_name(int(scene.colour[i]), int(scene.shape[i])) if i >= 0 else ""

        relation = RELATION_PHRASES.get(goal.word, "")
        return template.format(a=name(goal.target), b=name(goal.reference), side=goal.word, relation=relation)


class Reach(Task):
    name = "reach"
    templates = ("move the gripper to the {a}", "go to the {a}", "reach for the {a}")
    heldout_templates = ("hover over the {a}",)

    def success(self, scene: Scene, goal: Goal, config: WorldConfig) -> bool:
        gap = np.linalg.norm(scene.gripper - scene.position[goal.target])
        return not scene.closed and bool(gap <= scene.radii(config)[goal.target])

    def expert(self, scene: Scene, goal: Goal, config: WorldConfig) -> np.ndarray:
        return experts.hover_to(scene, scene.position[goal.target], config)


class PickUp(Task):
    name = "pick_up"
    templates = ("pick up the {a}", "grasp the {a}", "lift the {a}")
    heldout_templates = ("grab the {a}",)

    def success(self, scene: Scene, goal: Goal, config: WorldConfig) -> bool:
        return scene.held == goal.target

    def expert(self, scene: Scene, goal: Goal, config: WorldConfig) -> np.ndarray:
        return experts.grasp(scene, goal.target, config)


class Stack(Task):
    name = "stack"
    objects_needed = 2
    templates = ("put the {a} on the {b}", "stack the {a} on the {b}", "place the {a} on top of the {b}")
    heldout_templates = ("set the {a} onto the {b}",)

    def setup(self, scene: Scene, rng: np.random.Generator, config: WorldConfig) -> Goal | None:
        return Goal(reference=REFERENCE, point=tuple(scene.position[REFERENCE]))

    def success(self, scene: Scene, goal: Goal, config: WorldConfig) -> bool:
        return scene.held < 0 and scene.support[goal.target] == goal.reference


class Unstack(Task):
    name = "unstack"
    objects_needed = 2
    templates = ("take the {a} off the {b}", "remove the {a} from the {b}", "unstack the {a} from the {b}")
    heldout_templates = ("get the {a} off the {b}",)

    def setup(self, scene: Scene, rng: np.random.Generator, config: WorldConfig) -> Goal | None:
        # the reference takes the target's place (centred in its cell, so it fits), the target goes on top
        cell = np.floor(scene.position[TARGET] * config.grid) + 0.5
        scene.position[REFERENCE] = cell / config.grid
        scene.position[TARGET] = scene.position[REFERENCE] + rng.uniform(-0.01, 0.01, 2)
        scene.support[TARGET] = REFERENCE
        spot = free_spot(scene, TARGET, scene.position[TARGET], config)
        return None if spot is None else Goal(reference=REFERENCE, point=tuple(spot))

    def success(self, scene: Scene, goal: Goal, config: WorldConfig) -> bool:
        return scene.held < 0 and scene.support[goal.target] < 0


class PlaceRegion(Task):
    """Put the target down inside a region; the goal spot is the free point nearest the region's aim."""

    def __init__(
        self, name: str, regions: tuple[str, ...], templates: tuple[str, ...], heldout: tuple[str, ...]
    ):
        self.name, self.regions, self.templates, self.heldout_templates = name, regions, templates, heldout

    def setup(self, scene: Scene, rng: np.random.Generator, config: WorldConfig) -> Goal | None:
        start = scene.position[TARGET]
        options = [r for r in self.regions if not in_region(start, r)]
        if not options:
            return None
        region = options[int(rng.integers(len(options)))]
        spot = free_spot(
            scene, TARGET, region_goal(region, start), config, accept=lambda p: in_region(p, region)
        )
        if spot is None or np.linalg.norm(spot - start) < MIN_TRAVEL:
            return None
        return Goal(word=region, point=tuple(spot))

    def success(self, scene: Scene, goal: Goal, config: WorldConfig) -> bool:
        return scene.held < 0 and in_region(scene.position[goal.target], goal.word)


class PlaceRelation(Task):
    name = "place_relation"
    objects_needed = 2
    templates = (
        "put the {a} {relation} the {b}",
        "place the {a} {relation} the {b}",
        "move the {a} {relation} the {b}",
    )
    heldout_templates = ("set the {a} down {relation} the {b}",)

    def setup(self, scene: Scene, rng: np.random.Generator, config: WorldConfig) -> Goal | None:
        a, b = scene.position[TARGET], scene.position[REFERENCE]
        radii = scene.radii(config)
        for relation in rng.permutation(RELATIONS):
            if relation_holds(a, b, relation):
                continue
            aim = b + direction(relation) * (radii[TARGET] + radii[REFERENCE] + RELATION_GAP)
            spot = free_spot(scene, TARGET, aim, config, accept=lambda p, r=relation: relation_holds(p, b, r))
            if spot is not None:
                return Goal(reference=REFERENCE, word=str(relation), point=tuple(spot))
        return None

    def success(self, scene: Scene, goal: Goal, config: WorldConfig) -> bool:
        on_table = scene.held < 0 and scene.support[goal.target] < 0
        return on_table and relation_holds(
            scene.position[goal.target], scene.position[goal.reference], goal.word
        )


class PushSide(Task):
    """Push the target into a side band without ever grasping it; the lane of the push must be clear."""

    name = "push_side"
    templates = ("push the {a} to the {side} side", "slide the {a} to the {side}")
    heldout_templates = ("shove the {a} towards the {side} edge",)

    def setup(self, scene: Scene, rng: np.random.Generator, config: WorldConfig) -> Goal | None:
        start = scene.position[TARGET]
        for side in rng.permutation(SIDES):
            if not in_region(start, side) and self._lane_clear(scene, str(side), config):
                return Goal(word=str(side))
        return None

    def _lane_clear(self, scene: Scene, side: str, config: WorldConfig) -> bool:
        """The stand-off point is on the table and nothing lies in the band the push sweeps."""
        d, radii = direction(side), scene.radii(config)
        start = scene.position[TARGET]
        reach = radii[TARGET] + config.gripper_radius
        standoff = start - d * (reach + experts.PUSH_STANDOFF)
        if np.any(standoff < 0.0) or np.any(standoff > 1.0):
            return False
        travel = self.stop(side) - float(start @ d)
        across = np.array([-d[1], d[0]])
        for j in range(1, scene.num_objects):
            rel = scene.position[j] - start
            along, lateral = float(rel @ d), abs(float(rel @ across))
            width = max(radii[TARGET], config.gripper_radius) + radii[j] + PUSH_CLEARANCE
            behind = reach + experts.PUSH_STANDOFF + config.gripper_radius + radii[j] + PUSH_CLEARANCE
            ahead = travel + radii[TARGET] + radii[j] + PUSH_CLEARANCE
            if lateral < width and -behind <= along <= ahead:
                return False
        return True

    @staticmethod
    def stop(side: str) -> float:
        """The value of position·direction at which the expert stops pushing (GOAL_DEPTH from the edge)."""
        d = direction(side)
        return float(region_goal(side, np.full(2, 0.5)) @ d)

    def success(self, scene: Scene, goal: Goal, config: WorldConfig) -> bool:
        target = goal.target
        return scene.held < 0 and not scene.grasped[target] and in_region(scene.position[target], goal.word)

    def expert(self, scene: Scene, goal: Goal, config: WorldConfig) -> np.ndarray:
        return experts.push(scene, goal.target, direction(goal.word), self.stop(goal.word), config)


def make_tasks() -> dict[str, Task]:
    """Every task of the suite by name, in a fixed order."""
    tasks: list[Task] = [
        Reach(),
        PickUp(),
        Stack(),
        Unstack(),
        PlaceRegion(
            "place_side",
            SIDES,
            (
                "put the {a} on the {side} side",
                "move the {a} to the {side} side",
                "place the {a} on the {side} side of the table",
            ),
            ("bring the {a} over to the {side} side",),
        ),
        PlaceRegion(
            "place_corner",
            CORNERS,
            ("put the {a} in the {side} corner", "move the {a} to the {side} corner"),
            ("place the {a} into the {side} corner of the table",),
        ),
        PlaceRegion(
            "place_middle",
            (CENTRE,),
            ("put the {a} in the middle", "move the {a} to the middle of the table"),
            ("bring the {a} to the middle",),
        ),
        PlaceRelation(),
        PushSide(),
    ]
    return {task.name: task for task in tasks}


TASK_NAMES = (
    "reach",
    "pick_up",
    "stack",
    "unstack",
    "place_side",
    "place_corner",
    "place_middle",
    "place_relation",
    "push_side",
)
