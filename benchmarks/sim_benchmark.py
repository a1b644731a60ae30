"""Measure the tabletop suite: render time per frame, expert success per task, demonstration generation speed.

    python benchmarks/sim_benchmark.py --image_size 128 --episodes_per_task 50 --workers 1 2

Run it pinned to one core (`taskset -c 0`) for the per-core render time.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from craft_vla.eval.results import success_rates
from craft_vla.eval.tabletop import ExpertChunkPolicy, TabletopEvaluator
from craft_vla.sim.demonstrations import expert_states, write_demonstrations
from craft_vla.sim.render import render_ms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/sim_benchmark.py", description=__doc__)
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
        evaluator = TabletopEvaluator(64, split, num_envs=16)
        start = time.perf_counter()
        episodes = evaluator.run(
            ExpertChunkPolicy(evaluator.envs, 8), episodes_per_task=args.episodes_per_task, progress=False
        )
        seconds = time.perf_counter() - start
        lengths = np.array([e.steps for e in episodes])
        per_task = success_rates(episodes)[evaluator.suite]["per_task"]
        rates = "  ".join(f"{task} {rate:.2f}" for task, rate in per_task.items())
        print(f"  {split}: {rates}  (mean {lengths.mean():.1f} steps, max {lengths.max()}, {seconds:.1f} s)")

    for workers in args.workers:
        with tempfile.TemporaryDirectory() as tmp:
            report = write_demonstrations(
                tmp, args.generate_per_task, args.generate_size, workers=workers, progress=False
            )
            print(f"generation, {workers} worker(s): {report.summary()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
