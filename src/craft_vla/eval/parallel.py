"""Closed-loop evaluation over many environments: one simulator per worker, one policy forward for all.

With `num_envs` = 1 the simulator runs in this process; otherwise `num_envs` worker processes
(spawned, so CUDA and EGL are safe) each own one. The policy stays in this process and is called
once for every set of environments waiting for actions. Each episode is fully determined by its
spec (seeded reset to a fixed initial state) and by the policy's answers for its observations, so a
policy whose output for an observation does not depend on the rest of the batch gives the same
per-episode outcomes for any `num_envs`.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from collections import deque
from collections.abc import Callable
from multiprocessing import connection
from typing import Any

import numpy as np
from tqdm import tqdm

from craft_vla.eval.libero_episode import EpisodeSpec, EpisodeWorker, Reply
from craft_vla.eval.libero_policy import ChunkPolicy
from craft_vla.eval.protocol import LiberoProtocol, gripper_to_env, open_loop_actions
from craft_vla.eval.results import EpisodeResult


class RemoteTraceback(Exception):
    """The traceback of an error raised in a worker process, attached as the cause."""


def _worker_main(conn: connection.Connection, env_factory: Callable[[str], Any], protocol: LiberoProtocol) -> None:
    """Worker process loop: answer ("start", spec) and ("act", actions) until ("close", None)."""
    worker = EpisodeWorker(env_factory, protocol)
    try:
        while True:
            kind, payload = conn.recv()
            if kind == "close":
                break
            conn.send(getattr(worker, kind)(payload))
    except Exception as err:  # noqa: BLE001  (sent to the main process, which raises it)
        trace = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        try:
            conn.send(("fatal", (err, trace)))
        except Exception:  # noqa: BLE001  (an exception that does not pickle)
            conn.send(("fatal", (RuntimeError(f"{type(err).__name__}: {err}"), trace)))
    finally:
        worker.close()
        conn.close()


class _InlineHandle:
    """A simulator in this process, answering synchronously."""

    def __init__(self, env_factory: Callable[[str], Any], protocol: LiberoProtocol) -> None:
        self.worker = EpisodeWorker(env_factory, protocol)
        self.reply: Reply | None = None

    def send(self, kind: str, payload: Any) -> None:
        self.reply = getattr(self.worker, kind)(payload)

    def recv(self) -> Reply:
        reply, self.reply = self.reply, None
        return reply

    def close(self) -> None:
        self.worker.close()


class _ProcessHandle:
    """A simulator in a spawned worker process, talked to over a pipe."""

    def __init__(self, ctx: Any, env_factory: Callable[[str], Any], protocol: LiberoProtocol, index: int) -> None:
        self.index = index
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child, env_factory, protocol), daemon=True)
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
                "a crash in the simulator or renderer, or the machine ran out of memory (try fewer --num_envs)"
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


def _ready(busy: list[Any]) -> list[Any]:
    """The busy handles with a reply waiting (blocks until at least one has)."""
    inline = [h for h in busy if isinstance(h, _InlineHandle)]
    if inline:
        return inline
    ready = set(connection.wait([h.conn for h in busy]))
    return [h for h in busy if h.conn in ready]


def policy_observation(observation: dict[str, Any], spec: EpisodeSpec) -> dict[str, Any]:
    """A worker's observation plus what the policy may condition on: instruction and episode identity."""
    return {**observation, "instruction": spec.instruction, "suite": spec.suite,
            "task_index": spec.task_index, "trial": spec.trial}


def predict_env_actions(policy: ChunkPolicy, observations: list[dict[str, Any]], protocol: LiberoProtocol) -> list[np.ndarray]:
    """One policy forward for all observations -> each environment's executed actions (k, A), in order."""
    chunks = np.asarray(policy.predict_chunks(observations), dtype=np.float64)
    action_dim = len(protocol.settle_action)
    if chunks.ndim != 3 or chunks.shape[0] != len(observations) or chunks.shape[2] != action_dim:
        raise ValueError(
            f"the policy returned actions of shape {chunks.shape} for {len(observations)} observations; "
            f"expected ({len(observations)}, T, {action_dim}): LIBERO's action is 6 delta EEF dims + gripper. "
            "Evaluate a checkpoint trained on a LIBERO dataset"
        )
    return [gripper_to_env(open_loop_actions(chunk, protocol.num_open_loop_steps)) for chunk in chunks]


def run_episodes(
    episodes: list[EpisodeSpec],
    policy: ChunkPolicy,
    env_factory: Callable[[str], Any],
    protocol: LiberoProtocol,
    num_envs: int = 1,
    progress: bool = True,
    desc: str = "eval",
) -> list[EpisodeResult]:
    """Run every episode to the end and return their results in the order of `episodes`.

    Episodes are handed out in order to free environments (consecutive episodes of one task
    reuse that worker's simulator); the policy is queried once per set of waiting environments.
    """
    if num_envs < 1:
        raise ValueError(f"num_envs must be at least 1, got {num_envs}")
    pending = deque(episodes)
    num_envs = min(num_envs, len(episodes))
    if num_envs <= 1:
        handles: list[Any] = [_InlineHandle(env_factory, protocol)] if episodes else []
    else:
        ctx = mp.get_context("spawn")
        handles = [_ProcessHandle(ctx, env_factory, protocol, i) for i in range(num_envs)]
    running: dict[Any, EpisodeSpec] = {}
    results: dict[tuple[str, int, int], EpisodeResult] = {}
    bar = tqdm(total=len(episodes), desc=desc, disable=not progress, dynamic_ncols=True)

    def start_next(handle: Any) -> None:
        if pending:
            running[handle] = pending.popleft()
            handle.send("start", running[handle])

    try:
        for handle in handles:
            start_next(handle)
        while running:
            waiting = []
            for handle in _ready(list(running)):
                kind, payload = handle.recv()
                if kind == "obs":
                    waiting.append((handle, policy_observation(payload, running[handle])))
                elif kind == "done":
                    results[running.pop(handle).key] = payload
                    successes = sum(r.success for r in results.values())
                    bar.update(1)
                    bar.set_postfix_str(f"success {successes}/{len(results)} ({100 * successes / len(results):.0f} %)")
                    start_next(handle)
                else:
                    error, trace = payload
                    raise error from RemoteTraceback(trace)
            if waiting:
                actions = predict_env_actions(policy, [obs for _, obs in waiting], protocol)
                for (handle, _), env_actions in zip(waiting, actions):
                    handle.send("act", env_actions)
    finally:
        bar.close()
        for handle in handles:
            handle.close()
    return [results[spec.key] for spec in episodes]
