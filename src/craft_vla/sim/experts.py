"""Scripted expert motions, each a stateless rule from the scene to one action (A,) = (dx, dy, grip).

Stateless: the phase (approach, grasp, carry, release, push) is read off the scene every step, so
an expert recovers from perturbations (noisy demonstrations, or a policy handing over mid-episode).
Motions go straight at full speed and land exactly when the goal is within one step.
"""

from __future__ import annotations

import numpy as np

from craft_vla.sim.world import Scene, WorldConfig

OPEN, CLOSE = -1.0, 1.0
PUSH_STANDOFF = 0.015  # gap between the gripper's footprint and the object before a push starts
PUSH_LATERAL_SLACK = 0.02  # how far off the line of push the gripper may be and keep pushing


def move_towards(scene: Scene, point: np.ndarray, grip: float, config: WorldConfig) -> np.ndarray:
    """The action that moves the gripper straight towards `point` (2,) with the given grip command."""
    delta = np.clip((np.asarray(point) - scene.gripper) / config.max_step, -1.0, 1.0)
    return np.array([delta[0], delta[1], grip], dtype=np.float32)


def within_one_step(scene: Scene, point: np.ndarray, config: WorldConfig) -> bool:
    return bool(np.all(np.abs(np.asarray(point) - scene.gripper) <= config.max_step + 1e-9))


def let_go() -> np.ndarray:
    """Open in place."""
    return np.array([0.0, 0.0, OPEN], dtype=np.float32)


def hover_to(scene: Scene, point: np.ndarray, config: WorldConfig) -> np.ndarray:
    """Move open (above everything); a closed gripper first opens where it is, so it pushes nothing."""
    return let_go() if scene.closed else move_towards(scene, point, OPEN, config)


def hover_and_close(scene: Scene, point: np.ndarray, config: WorldConfig) -> np.ndarray:
    """Hover to `point` and close there (grasping what is under it, or putting the gripper down)."""
    if scene.closed or not within_one_step(scene, point, config):
        return hover_to(scene, point, config)
    return move_towards(scene, point, CLOSE, config)


def grasp(scene: Scene, target: int, config: WorldConfig) -> np.ndarray:
    """Get `target` into the gripper: drop anything else, hover over its centre, close."""
    if scene.held >= 0 and scene.held != target:
        return let_go()
    if scene.held == target:
        return np.array([0.0, 0.0, CLOSE], dtype=np.float32)
    return hover_and_close(scene, scene.position[target], config)


def carry(scene: Scene, target: int, goal: np.ndarray, config: WorldConfig) -> np.ndarray:
    """Put `target`'s centre at `goal` (2,) and let go there."""
    if scene.held != target:
        return grasp(scene, target, config)
    gripper_goal = goal - (scene.position[target] - scene.gripper)
    grip = OPEN if within_one_step(scene, gripper_goal, config) else CLOSE
    return move_towards(scene, gripper_goal, grip, config)


def push(scene: Scene, target: int, direction: np.ndarray, stop: float, config: WorldConfig) -> np.ndarray:
    """Push `target` along the unit vector `direction` (2,) until position·direction reaches `stop`.

    The gripper hovers to a stand-off point behind the object, closes onto the table there, and
    pushes; it steers back onto the line of push while it pushes.
    """
    reach = scene.radii(config)[target] + config.gripper_radius
    behind = scene.position[target] - direction * reach
    across = np.array([-direction[1], direction[0]])
    rel = scene.gripper - behind
    in_contact = (
        scene.closed
        and scene.held < 0
        and abs(float(rel @ across)) <= PUSH_LATERAL_SLACK
        and -2 * PUSH_STANDOFF <= float(rel @ direction) <= PUSH_STANDOFF
    )
    if in_contact:
        remaining = max(stop - float(scene.position[target] @ direction), 0.0)
        aim = scene.gripper + direction * remaining - across * float(rel @ across)
        return move_towards(scene, aim, CLOSE, config)
    if scene.held >= 0:
        return let_go()
    return hover_and_close(scene, behind - direction * PUSH_STANDOFF, config)
