"""The tabletop world: objects on a unit table, a gripper above it, honest 2.5-D kinematics.

Coordinates: the table is the unit square, x to the right, y to the top; the third-person camera
looks straight down, so "top"/"above" mean towards the top of its image. Objects are discs for
contact (radius by size; cubes and pyramids are drawn inside their disc); an object rests on the
table or on another object (`support`), so stacks exist and move as one.

Action space, A = 3, float32, each component clipped to [-1, 1]:
    dx, dy  gripper displacement as a fraction of `WorldConfig.max_step` (table units per step);
            each axis is clipped separately.
    grip    > 0 commands the gripper closed, <= 0 open.
Proprio state, S = 4, float32: gripper x, gripper y (table units, in [0, 1]), closed (0/1),
holding (0/1).

One step: the gripper moves (in substeps, clipped to the table), then takes the commanded grip.
- Open gripper: hovers above everything; moving it touches nothing.
- Closing over objects (gripper point inside an object's disc) grasps the topmost one, which is
  lifted with whatever is stacked on it and keeps its offset to the gripper. Closing over empty
  table puts the closed gripper down on the table.
- A closed, empty gripper is a disc of radius `gripper_radius` on the table: it pushes the
  table-level objects it touches out along the line of centres; a pushed object pushes the
  objects it then touches once; stacks ride on their base; objects stay on the table.
- Opening while holding puts the object down: on the topmost object whose disc contains its
  centre (it is stacked there), else on the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

ACTION_DIM = 3
STATE_DIM = 4
HELD_HEIGHT = 3  # the render height of a held object, above any stack the suite builds


@dataclass(frozen=True)
class WorldConfig:
    """Geometry of the world, in table units (the table is 1 × 1)."""

    max_step: float = 0.05  # gripper displacement per step at |dx| = 1
    radius: tuple[float, float] = (0.055, 0.08)  # contact radius of a small and a large object
    gripper_radius: float = 0.035  # footprint of the closed gripper on the table
    push_substep: float = 0.02  # contact is resolved every this much gripper motion
    grid: int = 4  # cells per side: initial placements (one object per cell) and region questions
    min_objects: int = 3
    max_objects: int = 5


@dataclass
class Scene:
    """The full state: N objects (attribute indices into `attributes`), their poses, the gripper."""

    position: np.ndarray  # (N, 2) float64, object centres
    colour: np.ndarray  # (N,) int64
    shape: np.ndarray  # (N,) int64
    size: np.ndarray  # (N,) int64
    material: np.ndarray  # (N,) int64
    support: np.ndarray  # (N,) int64, index of the object it rests on, -1 = the table
    gripper: np.ndarray = field(default_factory=lambda: np.array([0.5, 0.5]))  # (2,)
    closed: bool = False
    held: int = -1  # index of the held object, -1 = none
    grasped: np.ndarray | None = None  # (N,) bool, whether the object was ever grasped

    def __post_init__(self) -> None:
        if self.grasped is None:
            self.grasped = np.zeros(len(self.colour), dtype=bool)

    @property
    def num_objects(self) -> int:
        return len(self.colour)

    def copy(self) -> Scene:
        arrays = {k: v.copy() for k, v in vars(self).items() if isinstance(v, np.ndarray)}
        return replace(self, **arrays)

    def radii(self, config: WorldConfig) -> np.ndarray:
        """(N,) contact radius of each object."""
        return np.asarray(config.radius)[self.size]

    def proprio(self) -> np.ndarray:
        """(S,) = (x, y, closed, holding), float32."""
        return np.array([*self.gripper, float(self.closed), float(self.held >= 0)], dtype=np.float32)


def riders(scene: Scene, index: int) -> list[int]:
    """`index` and every object stacked on it, directly or not."""
    out = [index]
    for i in out:
        out.extend(int(j) for j in np.flatnonzero(scene.support == i))
    return out


def levels(scene: Scene) -> np.ndarray:
    """(N,) number of objects under each one (0 = on the table or held)."""
    level = np.zeros(scene.num_objects, dtype=np.int64)
    for i in range(scene.num_objects):
        j = scene.support[i]
        while j >= 0:
            level[i] += 1
            j = scene.support[j]
    return level


def heights(scene: Scene) -> np.ndarray:
    """(N,) render height: the stack level, with a held object (and its riders) lifted by HELD_HEIGHT."""
    height = levels(scene)
    if scene.held >= 0:
        for i in riders(scene, scene.held):
            height[i] += HELD_HEIGHT
    return height


def is_clear(scene: Scene, index: int) -> bool:
    """Nothing is stacked on `index`."""
    return not bool(np.any(scene.support == index))


def topmost_containing(scene: Scene, point: np.ndarray, config: WorldConfig, exclude: list[int]) -> int:
    """The highest object whose disc contains `point` (ties: the nearest), or -1."""
    dist = np.linalg.norm(scene.position - point, axis=1)
    inside = dist <= scene.radii(config)
    inside[exclude] = False
    if not inside.any():
        return -1
    candidates = np.flatnonzero(inside)
    key = levels(scene)[candidates] * 10.0 - dist[candidates]
    return int(candidates[np.argmax(key)])


def move_stack(scene: Scene, index: int, delta: np.ndarray) -> None:
    """Translate `index` and its riders by `delta` (2,)."""
    scene.position[riders(scene, index)] += delta


def clamp_to_table(scene: Scene, index: int, config: WorldConfig) -> None:
    """Shift the stack on `index` so that the object's disc lies on the table."""
    r = scene.radii(config)[index]
    delta = np.clip(scene.position[index], r, 1.0 - r) - scene.position[index]
    if np.any(delta):
        move_stack(scene, index, delta)


def _push_out(scene: Scene, index: int, centre: np.ndarray, reach: float, fallback: np.ndarray) -> bool:
    """Move the stack on `index` out of a disc at `centre`, to distance `reach`. True if it moved."""
    offset = scene.position[index] - centre
    dist = float(np.linalg.norm(offset))
    if dist >= reach:
        return False
    normal = offset / dist if dist > 1e-9 else fallback
    move_stack(scene, index, normal * (reach - dist))
    return True


def resolve_push(scene: Scene, direction: np.ndarray, config: WorldConfig) -> None:
    """The closed empty gripper pushes the table-level objects it overlaps; each
    pushes its neighbours once."""
    radii = scene.radii(config)
    table = [int(i) for i in np.flatnonzero(scene.support < 0) if i != scene.held]
    for i in table:
        if not _push_out(scene, i, scene.gripper, radii[i] + config.gripper_radius, direction):
            continue
        for j in table:
            if j != i and _push_out(scene, j, scene.position[i], radii[i] + radii[j], direction):
                clamp_to_table(scene, j, config)
        clamp_to_table(scene, i, config)


def move_gripper(scene: Scene, delta: np.ndarray, config: WorldConfig) -> None:
    """Move the gripper by `delta` (2,) within the table, carrying or pushing as its state dictates."""
    target = np.clip(scene.gripper + delta, 0.0, 1.0)
    delta = target - scene.gripper
    distance = float(np.linalg.norm(delta))
    if distance == 0.0:
        return
    pushing = scene.closed and scene.held < 0
    substeps = max(1, int(np.ceil(distance / config.push_substep))) if pushing else 1
    for _ in range(substeps):
        scene.gripper = scene.gripper + delta / substeps
        if scene.held >= 0:
            move_stack(scene, scene.held, delta / substeps)
        elif pushing:
            resolve_push(scene, delta / distance, config)


def close_gripper(scene: Scene, config: WorldConfig) -> None:
    """Grasp the topmost object under the gripper point, or put the closed gripper down on the table."""
    if scene.closed:
        return
    scene.closed = True
    index = topmost_containing(scene, scene.gripper, config, exclude=[])
    if index < 0:
        resolve_push(scene, np.array([1.0, 0.0]), config)
        return
    scene.held = index
    scene.support[index] = -1
    scene.grasped[index] = True


def open_gripper(scene: Scene, config: WorldConfig) -> None:
    """Put the held object down (stacked on what is under its centre, else on the table) and open."""
    scene.closed = False
    index, scene.held = scene.held, -1
    if index < 0:
        return
    base = topmost_containing(scene, scene.position[index], config, exclude=riders(scene, index))
    scene.support[index] = base
    if base < 0:
        clamp_to_table(scene, index, config)


def step_world(scene: Scene, action: np.ndarray, config: WorldConfig) -> None:
    """Apply one action (A,) = (dx, dy, grip) in place: move, then take the commanded grip."""
    action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
    move_gripper(scene, action[:2] * config.max_step, config)
    if action[2] > 0:
        close_gripper(scene, config)
    elif scene.closed:
        open_gripper(scene, config)
