"""Tasks: seeded set-up, held-out splits, instructions, success checks, and the
scripted experts in closed loop."""

from __future__ import annotations

import string

import numpy as np
import pytest

from craft_vla.sim.attributes import COLOURS, SHAPES, object_name
from craft_vla.sim.episodes import make_episode
from craft_vla.sim.layout import cell_of, in_region, relation_holds
from craft_vla.sim.splits import HELDOUT_PAIRS, SPLITS, heldout_cells
from craft_vla.sim.tasks import TASK_NAMES, make_tasks
from craft_vla.sim.world import WorldConfig, step_world

CONFIG = WorldConfig()
TASKS = make_tasks()


def expert_success_rate(
    task: str, split: str, seeds: range, action_noise: float = 0.0, max_steps: int = 60
) -> float:
    """Closed loop on the true state: the expert acts, the world steps, success is checked every step."""
    wins = 0
    for seed in seeds:
        episode = make_episode(task, seed, split)
        spec, rng = TASKS[task], np.random.default_rng(seed)
        for _ in range(max_steps):
            action = spec.expert(episode.scene, episode.goal, CONFIG).astype(np.float64)
            action[:2] += rng.normal(0.0, action_noise, 2)
            step_world(episode.scene, action, CONFIG)
            if spec.success(episode.scene, episode.goal, CONFIG):
                wins += 1
                break
    return wins / len(seeds)


def test_task_names_are_the_registry_order():
    assert tuple(TASKS) == TASK_NAMES and len(TASK_NAMES) >= 8


@pytest.mark.parametrize("task", TASK_NAMES)
def test_expert_succeeds_on_50_episodes(task):
    assert expert_success_rate(task, "train", range(50)) >= 0.95
    assert expert_success_rate(task, "heldout", range(50), action_noise=0.1) >= 0.95


@pytest.mark.slow
@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("task", TASK_NAMES)
def test_expert_succeeds_on_every_split_with_and_without_noise(task, split):
    assert expert_success_rate(task, split, range(200)) >= 0.95
    assert expert_success_rate(task, split, range(200, 400), action_noise=0.2) >= 0.95


@pytest.mark.parametrize("task", TASK_NAMES)
def test_no_episode_starts_solved(task):
    for seed in range(30):
        episode = make_episode(task, seed)
        assert not TASKS[task].success(episode.scene, episode.goal, CONFIG), (task, seed)


@pytest.mark.parametrize("task", TASK_NAMES)
def test_episodes_are_seeded(task):
    a, b = make_episode(task, 7), make_episode(task, 7)
    np.testing.assert_array_equal(a.scene.position, b.scene.position)
    assert a.instruction == b.instruction
    c = make_episode(task, 8)
    assert not np.array_equal(a.scene.position, c.scene.position)
    d = make_episode(task, 7, "heldout_phrasing")
    assert not np.array_equal(a.scene.position, d.scene.position)


@pytest.mark.parametrize("task", TASK_NAMES)
def test_instructions_name_the_target_and_reference(task):
    for seed in range(10):
        episode = make_episode(task, seed)
        scene, goal = episode.scene, episode.goal
        assert object_name(scene.colour[goal.target], scene.shape[goal.target]) in episode.instruction
        if goal.reference >= 0:
            assert (
                object_name(scene.colour[goal.reference], scene.shape[goal.reference]) in episode.instruction
            )


def test_objects_are_unique_by_colour_and_shape_and_do_not_overlap():
    for seed in range(40):
        scene = make_episode("stack", seed).scene
        pairs = set(zip(scene.colour.tolist(), scene.shape.tolist()))
        assert len(pairs) == scene.num_objects >= CONFIG.min_objects
        gaps = np.linalg.norm(scene.position[:, None] - scene.position[None], axis=-1)
        radii = scene.radii(CONFIG)
        np.fill_diagonal(gaps, np.inf)
        assert np.all(gaps >= radii[:, None] + radii[None])


def _pairs(scene) -> set[tuple[str, str]]:
    return {(COLOURS[c], SHAPES[s]) for c, s in zip(scene.colour, scene.shape)}


@pytest.mark.parametrize("task", ["reach", "place_side", "push_side"])
def test_held_out_objects_and_placements(task):
    held_cells = heldout_cells(CONFIG.grid)
    for seed in range(25):
        train = make_episode(task, seed, "train").scene
        assert not _pairs(train) & set(HELDOUT_PAIRS)
        assert not {cell_of(p, CONFIG.grid) for p in train.position} & held_cells
        objects = make_episode(task, seed, "heldout_objects").scene
        assert (COLOURS[objects.colour[0]], SHAPES[objects.shape[0]]) in HELDOUT_PAIRS
        placement = make_episode(task, seed, "heldout_placement").scene
        assert cell_of(placement.position[0], CONFIG.grid) in held_cells


def _template_pattern(template: str) -> str:
    return "".join(
        text + ("*" if field is not None else "") for text, field, _, _ in string.Formatter().parse(template)
    )


@pytest.mark.parametrize("task", TASK_NAMES)
def test_held_out_phrasings_never_appear_in_training(task):
    import fnmatch

    spec = TASKS[task]
    heldout = [_template_pattern(t) for t in spec.heldout_templates]
    train = [_template_pattern(t) for t in spec.templates]
    for seed in range(20):
        seen = make_episode(task, seed, "train").instruction
        assert not any(fnmatch.fnmatch(seen, p) for p in heldout)
        assert any(fnmatch.fnmatch(seen, p) for p in train)
        unseen = make_episode(task, seed, "heldout_phrasing").instruction
        assert any(fnmatch.fnmatch(unseen, p) for p in heldout)


def test_success_predicates_on_the_final_states():
    """Independent of the task classes: the final state satisfies the goal in plain geometry."""
    for seed in range(5):
        for task in ("stack", "place_relation", "push_side", "place_corner"):
            episode = make_episode(task, seed)
            spec, scene, goal = TASKS[task], episode.scene, episode.goal
            for _ in range(60):
                step_world(scene, spec.expert(scene, goal, CONFIG), CONFIG)
                if spec.success(scene, goal, CONFIG):
                    break
            a = scene.position[goal.target]
            assert scene.held == -1
            if task == "stack":
                b = scene.position[goal.reference]
                assert np.linalg.norm(a - b) <= scene.radii(CONFIG)[goal.reference]
            elif task == "place_relation":
                assert relation_holds(a, scene.position[goal.reference], goal.word)
            else:
                assert in_region(a, goal.word)
            if task == "push_side":
                assert not scene.grasped[goal.target]


def test_tasks_with_a_reference_object_say_they_need_two_objects():
    from craft_vla.sim.tasks import make_tasks

    needed = {name: task.objects_needed for name, task in make_tasks().items()}
    assert {name for name, n in needed.items() if n == 2} == {"stack", "unstack", "place_relation"}
    assert set(needed.values()) == {1, 2}
