"""A terminated demo takes its fine-tuning workers with it (they would otherwise keep the cores busy)."""

import os
import signal
import subprocess
import sys
import time

SCRIPT = """
import multiprocessing as mp, os, time
from craft_vla.demo.run import exit_on_sigterm

def pid_then_sleep(_):
    time.sleep(120)

if __name__ == "__main__":
    with exit_on_sigterm(), mp.get_context("spawn").Pool(2) as pool:
        pool.map_async(pid_then_sleep, range(2))
        time.sleep(1.0)  # let the workers start their task
        print(" ".join(str(p.pid) for p in pool._pool), flush=True)
        time.sleep(120)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_terminates_the_pool_workers(tmp_path):
    script = tmp_path / "pool.py"
    script.write_text(SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    workers = [int(p) for p in parent.stdout.readline().split()]
    assert len(workers) == 2 and all(alive(p) for p in workers)
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=30) == 128 + signal.SIGTERM
    deadline = time.monotonic() + 10
    while any(alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in workers)
