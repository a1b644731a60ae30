"""Random initial scenes (CLEVR-like) and free spots on the table.

Objects start one per grid cell, at a random offset inside the cell that keeps their discs apart;
their (colour, shape) pairs are distinct within a scene, so "the red cube" always names one object.
Object 0 is the one tasks target (the objects come in random order otherwise).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from craft_vla.sim.attributes import COLOURS, MATERIALS, SHAPES, SIZES
from craft_vla.sim.splits import Variant, heldout_cells, heldout_pair_indices
from craft_vla.sim.world import Scene, WorldConfig, riders

CELL_MARGIN = 0.01  # gap between an object's disc and its cell border at the start
SPOT_STEP = 0.01  # resolution of the free-spot search
SPOT_CLEARANCE = 0.02  # gap kept between a placed object's disc and its neighbours'


def sample_scene(rng: np.random.Generator, config: WorldConfig, held_out: Variant | None) -> Scene:
    """A random scene with the gripper open at a random point.

    With a split's `held_out` variant, object 0 (the target) obeys its rules and the other objects
    are training pairs in training cells; with None, any pair goes in any cell (perception scenes).
    """
    num = int(rng.integers(config.min_objects, config.max_objects + 1))
    all_pairs = [(c, s) for c in range(len(COLOURS)) for s in range(len(SHAPES))]
    all_cells = [(r, c) for r in range(config.grid) for c in range(config.grid)]
    if held_out is None:
        pairs = _distinct(rng, num, all_pairs, all_pairs)
        cells = _distinct(rng, num, all_cells, all_cells)
    else:
        pairs = _split_pool(rng, num, all_pairs, heldout_pair_indices(), held_out.objects)
        cells = _split_pool(rng, num, all_cells, heldout_cells(config.grid), held_out.placement)
    size = rng.integers(0, len(SIZES), num)
    radii = np.asarray(config.radius)[size]
    centres = np.array([[(c + 0.5) / config.grid, 1.0 - (r + 0.5) / config.grid] for r, c in cells])
    slack = 0.5 / config.grid - radii - CELL_MARGIN
    if np.any(slack < 0):
        raise ValueError(f"objects of radius {config.radius} do not fit in the cells of a {config.grid}-grid")
    position = centres + rng.uniform(-1.0, 1.0, (num, 2)) * slack[:, None]
    return Scene(
        position=position,
        colour=np.array([p[0] for p in pairs], dtype=np.int64),
        shape=np.array([p[1] for p in pairs], dtype=np.int64),
        size=size.astype(np.int64),
        material=rng.integers(0, len(MATERIALS), num).astype(np.int64),
        support=np.full(num, -1, dtype=np.int64),
        gripper=rng.uniform(0.05, 0.95, 2),
    )


def _split_pool(rng: np.random.Generator, num: int, pool: list, held: set, first_held_out: bool) -> list:
    """`num` distinct items of `pool`: the first from `held` iff `first_held_out`, the
    others never from `held`."""
    train = [item for item in pool if item not in held]
    return _distinct(rng, num, sorted(held) if first_held_out else train, train)


def _distinct(rng: np.random.Generator, num: int, first_pool: list, rest_pool: list) -> list:
    """One item of `first_pool`, then `num - 1` distinct other items of `rest_pool`."""
    first = first_pool[int(rng.integers(len(first_pool)))]
    rest = [item for item in rest_pool if item != first]
    return [first] + [rest[int(i)] for i in rng.choice(len(rest), num - 1, replace=False)]


def free_spot(
    scene: Scene,
    index: int,
    preferred: np.ndarray,
    config: WorldConfig,
    accept: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray | None:
    """The free table point nearest `preferred` (2,) where object `index` fits and `accept` holds.

    `accept` maps points (P, 2) to a bool mask (P,).

    Free: the object's disc lies on the table, SPOT_CLEARANCE away from every other object's disc
    (its own riders excepted). None when no such point exists.
    """
    r = scene.radii(config)[index]
    axis = np.arange(r, 1.0 - r + 1e-9, SPOT_STEP)
    points = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2)
    others = np.setdiff1d(np.arange(scene.num_objects), riders(scene, index))
    if len(others):
        gaps = np.linalg.norm(points[:, None] - scene.position[others][None], axis=-1)
        points = points[np.all(gaps >= r + scene.radii(config)[others] + SPOT_CLEARANCE, axis=1)]
    if accept is not None:
        points = points[accept(points)]
    if not len(points):
        return None
    return points[int(np.argmin(np.linalg.norm(points - preferred, axis=1)))]
