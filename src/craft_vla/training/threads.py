"""How many torch threads a process should use, so that processes × threads never exceed the idle cores.

On a small CPU, threads that outnumber the free cores do not share them gracefully: OpenMP workers spin
while they wait, and a step slowed 9.5 × with two threads against one next to one other busy process
(issue 18). One thread per process is always safe; more only where cores are idle.
"""

from __future__ import annotations

import os


def idle_cores() -> int:
    """Cores this process may run on, less those the last minute's load average says are busy (at least 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores - round(os.getloadavg()[0]))


def threads_per_process(processes: int = 1, requested: int = 0) -> int:
    """`requested` if > 0, else $OMP_NUM_THREADS if set, else the idle cores shared among `processes`."""
    if requested > 0:
        return requested
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"])
    return max(1, idle_cores() // max(1, processes))
