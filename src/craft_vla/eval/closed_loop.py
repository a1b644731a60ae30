"""The closed loop shared by every environment backend: N environments stepped together through one policy.

A policy answers a batch of observations with action chunks (N, T, A); each environment executes
the first `execute_steps` actions of its chunk (LIBERO's `num_open_loop_steps`) and the policy is
asked again. An environment is an `EpisodeRunner`: `start(spec)` and `act(actions)` answer
("obs", observation) while the episode runs and ("done", EpisodeResult) when it ends. Runners live
in this process (the tabletop suite's batch, LIBERO with one simulator) or in worker processes
(`craft_vla.eval.parallel`); the loop talks to both through handles.

Each episode is fully determined by its spec and by the policy's answers for its observations, so
a policy whose answer for one observation does not depend on the rest of the batch gives the same
per-episode outcomes for any number of environments.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from multiprocessing import connection
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from craft_vla.eval.protocol import open_loop_actions
from craft_vla.eval.results import EpisodeResult

# What a runner answers: ("obs", observation dict) while it waits for actions, ("done", EpisodeResult).
Reply = tuple[str, Any]


class ChunkPolicy(Protocol):
    def predict_chunks(self, observations: list[dict[str, Any]]) -> np.ndarray:
        """(N,) observation dicts -> (N, T, A) action chunks in the environment's units."""
        ...


class EpisodeRunner(Protocol):
    """One environment, driven a chunk at a time; it never sees the policy."""

    def start(self, spec: Any) -> Reply: ...

    def act(self, actions: np.ndarray) -> Reply:
        """Execute (k, A) policy actions in order, stopping early when the episode ends."""
        ...

    def close(self) -> None: ...


class RemoteTraceback(Exception):
    """The traceback of an error raised in a worker process, attached as the cause."""


class InlineHandle:
    """A runner in this process: it has answered by the time `send` returns."""

    conn = None  # nothing to wait on

    def __init__(self, runner: EpisodeRunner) -> None:
        self.runner = runner
        self.reply: Reply | None = None

    def send(self, kind: str, payload: Any) -> None:
        self.reply = getattr(self.runner, kind)(payload)

    def recv(self) -> Reply:
        reply, self.reply = self.reply, None
        return reply

    def close(self) -> None:
        self.runner.close()


def as_chunks(answer: Any, num: int, action_dim: int, action_meaning: str) -> np.ndarray:
    """The policy's answer as a float64 array (N, T, A), or an error that says what was expected."""
    if hasattr(answer, "detach"):  # a torch tensor
        answer = answer.detach().cpu().float().numpy()
    chunks = np.asarray(answer, dtype=np.float64)
    if chunks.ndim != 3 or chunks.shape[0] != num or chunks.shape[2] != action_dim:
        raise ValueError(
            f"the policy returned actions of shape {chunks.shape} for {num} observations; expected "
            f"(N={num}, T, A={action_dim}): {action_meaning}. A single action per observation is a chunk of "
            "length 1: add the axis with actions[:, None]"
        )
    return chunks


def run_episodes(
    episodes: Sequence[Any],
    policy: ChunkPolicy,
    handles: Sequence[Any],
    action_dim: int,
    action_meaning: str,
    execute_steps: int | None = None,
    progress: bool = True,
    desc: str = "eval",
) -> list[EpisodeResult]:
    """Run every episode to its end on `handles`; returns the results in the order of `episodes`.

    Episodes go in order to free environments; the policy is asked once per round, for every
    environment waiting for actions, in the order of `handles`. `execute_steps`: actions executed
    from each chunk (None: the whole chunk). The handles are closed at the end.
    """
    pending = deque(enumerate(episodes))
    running: dict[Any, int] = {}  # handle -> index of its episode
    results: dict[int, EpisodeResult] = {}
    bar = tqdm(total=len(episodes), desc=desc, disable=not progress, dynamic_ncols=True)

    def start_next(handle: Any) -> None:
        if pending:
            running[handle], spec = pending.popleft()
            handle.send("start", spec)

    def finish(handle: Any, result: EpisodeResult) -> None:
        results[running.pop(handle)] = result
        successes = sum(r.success for r in results.values())
        bar.update(1)
        bar.set_postfix_str(f"success {successes}/{len(results)} ({100 * successes / len(results):.0f} %)")
        start_next(handle)

    try:
        for handle in handles:
            start_next(handle)
        while running:
            waiting = []
            for handle in _ready([h for h in handles if h in running]):
                kind, payload = handle.recv()
                while kind == "done":
                    finish(handle, payload)
                    if handle not in running or handle.conn is not None:
                        break  # no episode left, or a worker process still setting up the next one
                    kind, payload = handle.recv()  # in this process the next start has answered already
                if kind == "obs":
                    waiting.append((handle, payload))
                elif kind == "fatal":
                    error, trace = payload
                    raise error from RemoteTraceback(trace)
            if waiting:
                answer = policy.predict_chunks([obs for _, obs in waiting])
                chunks = as_chunks(answer, len(waiting), action_dim, action_meaning)
                for (handle, _), chunk in zip(waiting, chunks):
                    handle.send("act", open_loop_actions(chunk, execute_steps or len(chunk)))
    finally:
        bar.close()
        for handle in handles:
            handle.close()
    return [results[i] for i in range(len(episodes))]


def _ready(busy: list[Any]) -> list[Any]:
    """The busy handles with a reply waiting, in order (blocks until at least one has one)."""
    inline = [h for h in busy if h.conn is None]
    if inline:
        return inline
    ready = set(connection.wait([h.conn for h in busy]))
    return [h for h in busy if h.conn in ready]
