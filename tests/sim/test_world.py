"""Kinematics of the tabletop world against hand-computed positions."""

from __future__ import annotations

import numpy as np
import pytest

from craft_vla.sim.world import Scene, WorldConfig, heights, levels, step_world

CONFIG = WorldConfig()
STEP = CONFIG.max_step
SMALL, LARGE = CONFIG.radius
FIST = CONFIG.gripper_radius


def make_scene(positions, sizes=None, gripper=(0.5, 0.5)) -> Scene:
    n = len(positions)
    return Scene(
        position=np.array(positions, dtype=np.float64),
        colour=np.arange(n, dtype=np.int64),
        shape=np.zeros(n, dtype=np.int64),
        size=np.array(sizes if sizes is not None else [0] * n, dtype=np.int64),
        material=np.zeros(n, dtype=np.int64),
        support=np.full(n, -1, dtype=np.int64),
        gripper=np.array(gripper, dtype=np.float64),
    )


def test_actions_are_clipped_per_axis_and_scaled_by_max_step():
    scene = make_scene([(0.9, 0.9)], gripper=(0.5, 0.5))
    step_world(scene, np.array([5.0, -0.5, -1.0]), CONFIG)
    np.testing.assert_allclose(scene.gripper, [0.5 + STEP, 0.5 - 0.5 * STEP])
    step_world(scene, np.array([0.0, -100.0, -1.0]), CONFIG)
    np.testing.assert_allclose(scene.gripper, [0.5 + STEP, 0.5 - 1.5 * STEP])


def test_gripper_stays_on_the_table():
    scene = make_scene([(0.5, 0.5)], gripper=(0.02, 0.99))
    step_world(scene, np.array([-1.0, 1.0, -1.0]), CONFIG)
    np.testing.assert_allclose(scene.gripper, [0.0, 1.0])


def test_open_gripper_hovers_over_objects():
    scene = make_scene([(0.55, 0.5)], gripper=(0.5, 0.5))
    before = scene.position.copy()
    for _ in range(3):
        step_world(scene, np.array([1.0, 0.0, -1.0]), CONFIG)
    np.testing.assert_array_equal(scene.position, before)


def test_grasp_carry_keeps_the_offset_and_release_puts_it_on_the_table():
    scene = make_scene([(0.5, 0.5)], gripper=(0.52, 0.49))
    step_world(scene, np.array([0.0, 0.0, 1.0]), CONFIG)
    assert scene.held == 0 and scene.closed and scene.grasped[0]
    step_world(scene, np.array([1.0, 1.0, 1.0]), CONFIG)
    np.testing.assert_allclose(scene.position[0], [0.5 + STEP, 0.5 + STEP])
    np.testing.assert_allclose(scene.gripper - scene.position[0], [0.02, -0.01])
    step_world(scene, np.array([0.0, 0.0, -1.0]), CONFIG)
    assert scene.held == -1 and not scene.closed and scene.support[0] == -1
    np.testing.assert_allclose(scene.proprio(), [0.52 + STEP, 0.49 + STEP, 0.0, 0.0], atol=1e-6)


def test_closing_beyond_the_disc_grasps_nothing():
    scene = make_scene([(0.5, 0.5)], gripper=(0.5 + SMALL + FIST + 0.001, 0.5))
    step_world(scene, np.array([0.0, 0.0, 1.0]), CONFIG)
    assert scene.held == -1 and scene.closed
    np.testing.assert_allclose(scene.position[0], [0.5, 0.5])


def test_release_over_an_object_stacks_and_stacks_move_together():
    scene = make_scene([(0.3, 0.5), (0.6, 0.5)], sizes=[0, 1], gripper=(0.3, 0.5))
    step_world(scene, np.array([0.0, 0.0, 1.0]), CONFIG)
    for _ in range(6):  # 0.29 to the right in six equal steps
        step_world(scene, np.array([0.29 / 6 / STEP, 0.0, 1.0]), CONFIG)
    np.testing.assert_allclose(scene.position[0], [0.59, 0.5])
    step_world(scene, np.array([0.0, 0.0, -1.0]), CONFIG)
    assert scene.support[0] == 1 and list(levels(scene)) == [1, 0]
    # where both discs contain the gripper point, the higher object is grasped
    step_world(scene, np.array([0.0, 0.0, 1.0]), CONFIG)
    assert scene.held == 0
    step_world(scene, np.array([0.0, 0.0, -1.0]), CONFIG)
    # grasp the base where the top object does not cover it: the rider comes along
    scene.gripper = np.array([0.6 + 0.06, 0.5])
    step_world(scene, np.array([0.0, 0.0, 1.0]), CONFIG)
    assert scene.held == 1
    assert list(heights(scene)) == [4, 3]
    step_world(scene, np.array([0.0, 1.0, 1.0]), CONFIG)
    np.testing.assert_allclose(scene.position[:, 1], [0.5 + STEP, 0.5 + STEP])


def test_closed_empty_gripper_pushes_along_the_line_of_centres():
    start = 0.3 + SMALL + FIST + 0.01
    scene = make_scene([(start, 0.5)], gripper=(0.3, 0.5))
    step_world(scene, np.array([0.0, 0.0, 1.0]), CONFIG)  # down on the table, touching nothing
    step_world(scene, np.array([1.0, 0.0, 1.0]), CONFIG)
    # after 0.05 of motion the fist (0.35) has been in contact for 0.04 and pushed the object by that much
    np.testing.assert_allclose(scene.position[0], [0.3 + STEP + SMALL + FIST, 0.5], atol=1e-12)
    assert not scene.grasped[0]


def test_a_pushed_object_pushes_its_neighbour_and_objects_stay_on_the_table():
    first = 0.3 + SMALL + FIST
    scene = make_scene([(first, 0.5), (first + 2 * SMALL, 0.5)], gripper=(0.3, 0.5))
    scene.closed = True
    step_world(scene, np.array([1.0, 0.0, 1.0]), CONFIG)
    np.testing.assert_allclose(scene.position[:, 0], [first + STEP, first + STEP + 2 * SMALL], atol=1e-12)
    for _ in range(30):
        step_world(scene, np.array([1.0, 0.0, 1.0]), CONFIG)
    assert scene.position[:, 0].max() <= 1.0 - SMALL + 1e-12


@pytest.mark.parametrize("grip", [-1.0, 1.0])
def test_proprio_layout(grip):
    scene = make_scene([(0.5, 0.5)], gripper=(0.5, 0.5))
    step_world(scene, np.array([0.0, 0.0, grip]), CONFIG)
    expected = [0.5, 0.5, float(grip > 0), float(grip > 0)]
    np.testing.assert_allclose(scene.proprio(), expected)
    assert scene.proprio().dtype == np.float32
