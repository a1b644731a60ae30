"""Cells, regions and relations on hand-picked points."""

from __future__ import annotations

import numpy as np
import pytest

from craft_vla.sim.layout import (
    cell_centre,
    cell_name,
    cell_names,
    cell_of,
    in_region,
    region_goal,
    relation_holds,
)


@pytest.mark.parametrize(
    ("point", "name"),
    [
        ((0.1, 0.9), "aa"),
        ((0.9, 0.9), "ad"),
        ((0.1, 0.1), "da"),
        ((0.6, 0.3), "cc"),
        ((1.0, 0.0), "dd"),
        ((0.0, 1.0), "aa"),
    ],
)
def test_cell_names_on_a_4_grid(point, name):
    assert cell_name(*cell_of(np.array(point), 4)) == name


def test_cell_centres_round_trip():
    for r in range(3):
        for c in range(3):
            assert cell_of(cell_centre(r, c, 3), 3) == (r, c)
    assert cell_names(2) == ["aa", "ab", "ba", "bb"]


@pytest.mark.parametrize(
    ("point", "region", "inside"),
    [
        ((0.29, 0.5), "left", True),
        ((0.31, 0.5), "left", False),
        ((0.71, 0.1), "right", True),
        ((0.5, 0.75), "top", True),
        ((0.5, 0.75), "bottom", False),
        ((0.2, 0.8), "top left", True),
        ((0.2, 0.6), "top left", False),
        ((0.8, 0.2), "bottom right", True),
        ((0.64, 0.36), "middle", True),
        ((0.66, 0.5), "middle", False),
    ],
)
def test_regions(point, region, inside):
    assert bool(in_region(np.array(point), region)) is inside


def test_regions_are_vectorised():
    points = np.array([[0.1, 0.5], [0.5, 0.5], [0.9, 0.5]])
    np.testing.assert_array_equal(in_region(points, "left"), [True, False, False])
    np.testing.assert_array_equal(in_region(points, "middle"), [False, True, False])


def test_region_goals_lie_inside_their_regions():
    start = np.array([0.6, 0.45])
    np.testing.assert_allclose(region_goal("left", start), [0.15, 0.45])
    np.testing.assert_allclose(region_goal("top right", start), [0.85, 0.85])
    np.testing.assert_allclose(region_goal("middle", start), [0.5, 0.5])


@pytest.mark.parametrize(
    ("a", "relation", "holds"),
    [
        ((0.3, 0.5), "left", True),  # 0.2 to the left, level
        ((0.3, 0.58), "left", True),  # a little higher still counts
        ((0.3, 0.65), "left", False),  # too far up
        ((0.45, 0.5), "left", False),  # too close
        ((0.1, 0.5), "left", False),  # too far
        ((0.7, 0.5), "right", True),
        ((0.5, 0.7), "above", True),
        ((0.5, 0.3), "below", True),
        ((0.5, 0.3), "above", False),
    ],
)
def test_relations_around_the_centre(a, relation, holds):
    assert bool(relation_holds(np.array(a), np.array([0.5, 0.5]), relation)) is holds
