"""Threads per process: an explicit request, then OMP_NUM_THREADS, then idle cores shared, never below one."""

import os

import pytest

from craft_vla.training import threads


@pytest.fixture
def machine(monkeypatch):
    def set_machine(cores: int, load: float, omp: str | None = None):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
        monkeypatch.setattr(threads, "busy_cores", lambda: load)
        if omp is None:
            monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        else:
            monkeypatch.setenv("OMP_NUM_THREADS", omp)

    return set_machine


def test_a_quiet_machine_shares_its_cores_among_the_processes(machine):
    machine(cores=16, load=0.0)
    assert threads.threads_per_process(1) == 16 and threads.threads_per_process(4) == 4
    assert threads.threads_per_process(32) == 1


def test_a_busy_core_is_left_alone(machine):
    machine(cores=2, load=1.1)  # one other busy process on two cores: one thread, not two
    assert threads.threads_per_process(1) == 1 and threads.threads_per_process(2) == 1
    machine(cores=2, load=5.0)
    assert threads.threads_per_process(1) == 1


def test_an_explicit_choice_wins(machine):
    machine(cores=2, load=0.0, omp="3")
    assert threads.threads_per_process(2) == 3
    assert threads.threads_per_process(2, requested=5) == 5
    machine(cores=2, load=0.0, omp="")
    assert threads.threads_per_process(1) == 2


def test_busy_cores_sees_a_busy_process_and_not_itself():
    import multiprocessing as mp

    quiet = threads.busy_cores(window=0.5)
    hog = mp.get_context("spawn").Process(target=_spin, args=(3.0,))
    hog.start()
    try:
        import time

        time.sleep(0.5)
        busy = threads.busy_cores(window=0.5)
    finally:
        hog.terminate()
        hog.join()
    assert busy >= quiet + 0.5  # one spinning process is about one core more


def _spin(seconds: float) -> None:
    import time

    end = time.time() + seconds
    while time.time() < end:
        pass
