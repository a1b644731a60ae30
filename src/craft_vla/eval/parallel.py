"""Where the closed loop's environments run: in this process, or one per spawned worker process.

A worker process builds its runner with a picklable factory and answers ("start", spec) and
("act", actions) over a pipe; spawned, so CUDA and EGL are safe. The policy stays in the main
process (`craft_vla.eval.closed_loop.run_episodes`).
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from collections.abc import Callable
from multiprocessing import connection
from typing import Any

from craft_vla.eval.closed_loop import EpisodeRunner, InlineHandle, Reply


def _worker_main(conn: connection.Connection, make_runner: Callable[[], EpisodeRunner]) -> None:
    """Worker process loop: answer ("start", spec) and ("act", actions) until ("close", None)."""
    runner = make_runner()
    try:
        while True:
            kind, payload = conn.recv()
            if kind == "close":
                break
            conn.send(getattr(runner, kind)(payload))
    except Exception as err:  # noqa: BLE001  (sent to the main process, which raises it)
        trace = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        try:
            conn.send(("fatal", (err, trace)))
        except Exception:  # noqa: BLE001  (an exception that does not pickle)
            conn.send(("fatal", (RuntimeError(f"{type(err).__name__}: {err}"), trace)))
    finally:
        runner.close()
        conn.close()


class ProcessHandle:
    """A runner in a spawned worker process, talked to over a pipe."""

    def __init__(self, ctx: Any, make_runner: Callable[[], EpisodeRunner], index: int) -> None:
        self.index = index
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child, make_runner), daemon=True)
        self.process.start()
        child.close()

    def send(self, kind: str, payload: Any) -> None:
        self.conn.send((kind, payload))

    def recv(self) -> Reply:
        try:
            return self.conn.recv()
        except EOFError as err:
            self.process.join(timeout=5)
            raise RuntimeError(
                f"evaluation worker {self.index} exited unexpectedly (exit code {self.process.exitcode}); "
                "a crash in the simulator or renderer, or the machine ran out of memory "
                "(try fewer --num_envs)"
            ) from err

    def close(self) -> None:
        if self.process.is_alive():
            try:
                self.conn.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
            self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()
        self.conn.close()


def start_handles(make_runner: Callable[[], EpisodeRunner], num_envs: int) -> list[Any]:
    """`num_envs` environments: one in this process when `num_envs` is 1, else one per worker process."""
    if num_envs < 1:
        raise ValueError(f"num_envs must be at least 1, got {num_envs}")
    if num_envs == 1:
        return [InlineHandle(make_runner())]
    ctx = mp.get_context("spawn")
    return [ProcessHandle(ctx, make_runner, i) for i in range(num_envs)]
