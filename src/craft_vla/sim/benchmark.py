"""Measure the suite: render time per frame, expert success per task, demonstration generation speed.

    python -m craft_vla.sim.benchmark --image_size 128 --episodes_per_task 50 --workers 1 2

Run it pinned to one core (`taskset -c 0`) for the per-core render time.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from craft_vla.sim.episodes import make_episode
from craft_vla.sim.evaluate import Evaluator, expert_chunk_policy
from craft_vla.sim.render import Renderer
from craft_vla.sim.tasks import TASK_NAMES, make_tasks
from craft_vla.sim.world import Scene, WorldConfig, step_world


def expert_states(num_episodes: int, config: WorldConfig | None = None) -> list[Scene]:
    """Every state of `num_episodes` expert episodes, tasks in turn: what demonstrations render."""
    config, tasks, states = config or WorldConfig(), make_tasks(), []
    for k in range(num_episodes):
        task = TASK_NAMES[k % len(TASK_NAMES)]
        episode = make_episode(task, k, config=config)
        while not tasks[task].success(episode.scene, episode.goal, config):
            states.append(episode.scene.copy())
            step_world(episode.scene, tasks[task].expert(episode.scene, episode.goal, config), config)
    return states


def render_ms(image_size: int, states: list[Scene]) -> dict[str, float]:
    """Milliseconds per frame of each view: the first pass (filling the sprite cache) and the next."""
    renderer, out = Renderer(image_size), {}
    for view in ("third_person", "wrist"):
        render = getattr(renderer, view)
        for run in ("first", "warm"):
            start = time.perf_counter()
            for scene in states:
                render(scene)
            out[f"{view}_{run}"] = (time.perf_counter() - start) / len(states) * 1e3
    return out


def main(argv: list[str] | None = None) -> int:
    from craft_vla.cli.sim import generate

    parser = argparse.ArgumentParser(prog="python -m craft_vla.sim.benchmark", description=__doc__)
    parser.add_argument("--image_size", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--episodes_per_task", type=int, default=50, help="expert success episodes per task")
    parser.add_argument("--generate_per_task", type=int, default=40, help="demonstrations per task to time")
    parser.add_argument("--generate_size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)

    states = expert_states(45)
    print(f"render, {len(states)} expert states, ms per frame:")
    for size in args.image_size:
        ms = render_ms(size, states)
        print(f"  {size:4d} px  " + "  ".join(f"{k} {v:.3f}" for k, v in ms.items()))

    print(f"expert success, closed loop, chunks of 8, {args.episodes_per_task} episodes per task, 64 px:")
    for split in ("train", "heldout"):
        evaluator = Evaluator(64, split, num_envs=16)
        start = time.perf_counter()
        result = evaluator.run(
            expert_chunk_policy(evaluator.envs, 8), episodes_per_task=args.episodes_per_task, progress=False
        )
        seconds = time.perf_counter() - start
        lengths = np.array([o.steps for o in result.outcomes])
        rates = "  ".join(f"{task} {rate:.2f}" for task, rate in result.per_task().items())
        print(f"  {split}: {rates}  (mean {lengths.mean():.1f} steps, max {lengths.max()}, {seconds:.1f} s)")

    for workers in args.workers:
        with tempfile.TemporaryDirectory() as tmp:
            report = generate(
                tmp, args.generate_per_task, args.generate_size, workers=workers, progress=False
            )
            print(f"generation, {workers} worker(s): {report.summary()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
