"""Training and held-out variants of the suite: which objects, placements and phrasings each one uses.

- train: no scene contains a held-out (colour, shape) pair, no object starts in a held-out cell,
  instructions use the training phrasings.
- heldout_objects: the target object (the first one an instruction names) is a held-out pair;
  every other object is a training pair.
- heldout_placement: the target object starts in a held-out cell; every other object as in train.
- heldout_phrasing: scenes as in train; instructions use phrasings no training episode uses.
- heldout: all three at once.
Every split draws its scenes from its own random stream, so the same seed gives different scenes
in different splits; evaluation seeds should differ from generation seeds as well (see `episodes`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from craft_vla.sim.attributes import COLOURS, SHAPES
from craft_vla.sim.layout import cell_of

SPLITS = ("train", "heldout_objects", "heldout_placement", "heldout_phrasing", "heldout")

# (colour, shape) pairs never in a training scene: each shape once, three different colours.
HELDOUT_PAIRS = (("red", "ball"), ("blue", "pyramid"), ("yellow", "cube"))
# Points whose grid cells no object starts in during training (interior cells, off the diagonal).
HELDOUT_PLACEMENT_POINTS = ((0.625, 0.625), (0.375, 0.375))


@dataclass(frozen=True)
class Variant:
    """Which factors of a split are held out."""

    objects: bool
    placement: bool
    phrasing: bool


def variant(split: str) -> Variant:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {SPLITS}")
    everything = split == "heldout"
    return Variant(
        objects=everything or split == "heldout_objects",
        placement=everything or split == "heldout_placement",
        phrasing=everything or split == "heldout_phrasing",
    )


def heldout_pair_indices() -> set[tuple[int, int]]:
    """The held-out pairs as (colour index, shape index)."""
    return {(COLOURS.index(c), SHAPES.index(s)) for c, s in HELDOUT_PAIRS}


def heldout_cells(grid: int) -> set[tuple[int, int]]:
    """The held-out (row, col) cells of a `grid` × `grid` layout."""
    return {cell_of(np.asarray(p), grid) for p in HELDOUT_PLACEMENT_POINTS}
