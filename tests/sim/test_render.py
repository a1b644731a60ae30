"""Rendering: what is drawn where, in which colour, and how fast."""

from __future__ import annotations

import numpy as np
import pytest

from craft_vla.sim.attributes import COLOURS, MATERIALS, SHAPES, SIZES
from craft_vla.sim.demonstrations import expert_states
from craft_vla.sim.episodes import make_episode
from craft_vla.sim.render import Renderer, render_ms
from craft_vla.sim.world import Scene, WorldConfig


def one_object(
    position, colour=0, shape="cube", size="large", material="rubber", gripper=(0.9, 0.1)
) -> Scene:
    return Scene(
        position=np.array([position], dtype=np.float64),
        colour=np.array([colour]),
        shape=np.array([SHAPES.index(shape)]),
        size=np.array([SIZES.index(size)]),
        material=np.array([MATERIALS.index(material)]),
        support=np.array([-1]),
        gripper=np.array(gripper, dtype=np.float64),
    )


def empty_scene(gripper=(0.9, 0.1)) -> Scene:
    none = np.zeros(0, dtype=np.int64)
    return Scene(np.zeros((0, 2)), none, none, none, none, none, gripper=np.array(gripper, dtype=np.float64))


@pytest.mark.parametrize("size", [32, 64, 128])
def test_frames_are_uint8_squares_and_deterministic(size):
    episode = make_episode("stack", 3)
    first = Renderer(size).render(episode.scene)
    second = Renderer(size).render(episode.scene)
    for a, b in zip(first, second):
        assert a.shape == (size, size, 3) and a.dtype == np.uint8
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("colour", range(len(COLOURS)))
@pytest.mark.parametrize("shape", SHAPES)
def test_object_centre_shows_its_colour(colour, shape, nearest_colour):
    renderer = Renderer(64)
    image = renderer.third_person(one_object((0.4, 0.6), colour, shape)).astype(np.float64)
    col, row = int(0.4 * 64), int((1 - 0.6) * 64)
    assert nearest_colour(image[row, col]) == COLOURS[colour]


def test_object_is_drawn_where_it_is_and_nowhere_else():
    renderer = Renderer(64)
    background = renderer.third_person(empty_scene()).astype(int)
    image = renderer.third_person(one_object((0.25, 0.75))).astype(int)
    changed = np.abs(image - background).sum(-1) > 30
    rows, cols = np.nonzero(changed)
    radius_px = WorldConfig().radius[1] * 64
    # inside the object's disc plus its shadow to the lower right, one pixel of anti-aliasing slack
    assert cols.min() >= 0.25 * 64 - radius_px - 1 and rows.min() >= 0.25 * 64 - radius_px - 1
    assert cols.max() <= 0.25 * 64 + 1.5 * radius_px + 2 and rows.max() <= 0.25 * 64 + 1.5 * radius_px + 2
    assert changed.sum() > np.pi * (0.8 * radius_px) ** 2 * 0.5


def test_large_objects_cover_more_pixels_and_metal_shines():
    renderer = Renderer(64)
    background = renderer.third_person(empty_scene()).astype(int)

    def covered(**kwargs) -> int:
        return int(
            (
                np.abs(renderer.third_person(one_object((0.5, 0.5), **kwargs)).astype(int) - background).sum(
                    -1
                )
                > 30
            ).sum()
        )

    assert covered(size="large") > 1.5 * covered(size="small")

    def brightest_on_object(material: str) -> int:
        image = renderer.third_person(one_object((0.5, 0.5), 2, "ball", material=material)).astype(int)
        rows, cols = np.mgrid[:64, :64] + 0.5
        inside = np.hypot(cols - 32, rows - 32) < 0.8 * WorldConfig().radius[1] * 64
        return int(image[inside].sum(-1).max())

    assert brightest_on_object("metal") > brightest_on_object("rubber") + 150


def test_wrist_view_is_centred_on_the_gripper(nearest_colour):
    renderer = Renderer(64)
    scene = one_object((0.5, 0.5), colour=1, gripper=(0.5, 0.5))
    wrist = renderer.wrist(scene).astype(np.float64)
    # a point 0.05 above the object's centre: off the flange, between the fingers, on the object
    row = int(32 - 0.05 * 64 * 2.5)
    assert nearest_colour(wrist[row, 32]) == "green"
    scene.gripper = np.array([0.2, 0.5])  # object now 0.3 to the right: outside the wrist view
    assert not np.any(np.all(np.abs(renderer.wrist(scene).astype(int) - [46, 168, 56]) < 40, axis=-1))


def test_wrist_view_shows_the_floor_beyond_the_table():
    wrist = Renderer(64).wrist(empty_scene(gripper=(0.0, 0.5)))
    floor = wrist[:, :20].reshape(-1, 3).mean(0)
    table = wrist[:, 44:].reshape(-1, 3).mean(0)
    assert floor.mean() < 100 < table.mean()


def test_closed_and_open_grippers_look_different():
    renderer = Renderer(64)
    scene = empty_scene(gripper=(0.5, 0.5))
    opened = renderer.third_person(scene)
    scene.closed = True
    assert np.abs(renderer.third_person(scene).astype(int) - opened).sum() > 500


def test_render_speed_loose_bound():
    assert render_ms(128, expert_states(9))["third_person_warm"] < 10.0


@pytest.mark.slow
def test_render_speed_target_128px():
    """The issue's target: <= 2 ms per 128 px frame on one core (both views measured)."""
    ms = render_ms(128, expert_states(45))
    assert ms["third_person_warm"] < 2.0 and ms["wrist_warm"] < 2.0
