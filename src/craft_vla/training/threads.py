"""How many torch threads a process should use, so that processes × threads never exceed the idle cores.

On a small CPU, threads that outnumber the free cores do not share them gracefully: OpenMP workers spin
while they wait, and a step slowed 9.5 × with two threads against one next to one other busy process
(issue 18). One thread per process is always safe; more only where cores are idle.
"""

from __future__ import annotations

import os
import time


def busy_cores(window: float = 0.25) -> float:
    """How many cores other processes keep busy now: the machine's non-idle CPU time over `window` seconds
    (Linux /proc/stat; elsewhere the last minute's load average, which lags). This process sleeps meanwhile,
    so a parent that has just finished its own work does not count, as it would in the load average."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
        return sum(ticks), ticks[3] + ticks[4]  # all, idle + iowait

    try:
        total, idle = sample()
        time.sleep(window)
        total_after, idle_after = sample()
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0]
    busy_share = 1.0 - (idle_after - idle) / max(total_after - total, 1)
    return busy_share * (os.cpu_count() or 1)


def idle_cores() -> int:
    """Cores this process may run on, less those other processes keep busy (at least 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores - round(busy_cores()))


def threads_per_process(processes: int = 1, requested: int = 0) -> int:
    """`requested` if > 0, else $OMP_NUM_THREADS if set, else the idle cores shared among `processes`."""
    if requested > 0:
        return requested
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"])
    return max(1, idle_cores() // max(1, processes))
