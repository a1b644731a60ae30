"""Where things are, in words: grid cells, table regions (sides, corners, centre) and relations.

Tasks check their goals and perception questions compute their answers with these same
predicates, so "left of" means one thing everywhere. A cell is named by two letters, its row
(a = top row) then its column (a = left column): with a 4 × 4 grid, "aa" is the top-left cell,
"ad" the top-right one, "dd" the bottom-right one. Letters only, so a word-level tokenizer that
splits digits from letters keeps a cell name one token.
"""

from __future__ import annotations

import numpy as np

SIDES = ("left", "right", "top", "bottom")
CORNERS = ("top left", "top right", "bottom left", "bottom right")
CENTRE = "middle"
RELATIONS = ("left", "right", "above", "below")
RELATION_PHRASES = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}

SIDE_DEPTH = 0.3  # a side region is the band of this width along its edge
CENTRE_HALF_WIDTH = 0.15  # the middle region is the square of this half-width around (0.5, 0.5)
GOAL_DEPTH = 0.15  # where the experts aim inside a side or corner region
RELATION_MIN, RELATION_MAX, RELATION_LATERAL = 0.08, 0.35, 0.1  # "left of": along-axis gap, sideways slack

_DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "top": (0.0, 1.0), "bottom": (0.0, -1.0)}
_DIRECTIONS.update({"above": _DIRECTIONS["top"], "below": _DIRECTIONS["bottom"]})


def direction(word: str) -> np.ndarray:
    """(2,) unit vector of a side or relation word ("left", "above", ...)."""
    return np.asarray(_DIRECTIONS[word])


def cell_of(point: np.ndarray, grid: int) -> tuple[int, int]:
    """(row, col) of the grid cell holding `point` (2,); row 0 is the top row."""
    col = int(np.clip(np.floor(point[0] * grid), 0, grid - 1))
    row = int(np.clip(np.floor((1.0 - point[1]) * grid), 0, grid - 1))
    return row, col


def cell_name(row: int, col: int) -> str:
    return chr(ord("a") + row) + chr(ord("a") + col)


def cell_names(grid: int) -> list[str]:
    """Every cell name, row-major from the top-left cell."""
    return [cell_name(r, c) for r in range(grid) for c in range(grid)]


def cell_centre(row: int, col: int, grid: int) -> np.ndarray:
    """(2,) centre of a cell in table units."""
    return np.array([(col + 0.5) / grid, 1.0 - (row + 0.5) / grid])


def in_region(point: np.ndarray, region: str, grow: float = 0.0) -> np.ndarray:
    """Whether points (..., 2) lie in a side ("left"), corner ("top left") or the middle; `grow` widens it.

    Returns a bool array of shape (...) (a numpy bool for one point).
    """
    point = np.asarray(point)
    if region == CENTRE:
        return np.all(np.abs(point - 0.5) <= CENTRE_HALF_WIDTH + grow, axis=-1)
    inside = np.ones(point.shape[:-1], dtype=bool)
    for side in region.split():
        d = direction(side)
        # distance from the edge the side lies along, measured inwards
        inward = (1.0 - point @ d) if d.sum() > 0 else -(point @ d)
        inside &= inward <= SIDE_DEPTH + grow
    return inside


def region_goal(region: str, point: np.ndarray) -> np.ndarray:
    """(2,) where an expert aims to put an object now at `point` into `region`: the
    nearest spot at GOAL_DEPTH."""
    if region == CENTRE:
        return np.array([0.5, 0.5])
    goal = np.array(point, dtype=np.float64)
    for side in region.split():
        d = direction(side)
        axis = int(np.argmax(np.abs(d)))
        goal[axis] = 1.0 - GOAL_DEPTH if d[axis] > 0 else GOAL_DEPTH
    return goal


def relation_holds(a: np.ndarray, b: np.ndarray, relation: str) -> np.ndarray:
    """Whether points `a` (..., 2) are `relation` ("left", "above", ...) of `b` (2,): near, on that side."""
    d = direction(relation)
    offset = np.asarray(a) - np.asarray(b)
    along = offset @ d
    lateral = np.abs(offset @ np.array([-d[1], d[0]]))
    return (along >= RELATION_MIN) & (along <= RELATION_MAX) & (lateral <= RELATION_LATERAL)
