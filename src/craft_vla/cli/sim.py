"""`craft-vla data generate`: expert demonstrations of the embedded tabletop suite as an RLDS dataset.

Plain functions: `generate(...)` does the work; `add_generate_arguments(parser)` and
`generate_from_args(args)` let a command wire it; `main(argv)` runs it alone.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from craft_vla.sim.demonstrations import GenerationReport, write_demonstrations
from craft_vla.sim.splits import SPLITS
from craft_vla.sim.tasks import TASK_NAMES


def generate(
    out_dir: str | Path,
    num_episodes_per_task: int = 40,
    image_size: int = 64,
    seed: int = 0,
    workers: int = 1,
    split: str = "train",
    tasks: tuple[str, ...] = TASK_NAMES,
    action_noise: float = 0.0,
    name: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> GenerationReport:
    """Write `num_episodes_per_task` demonstrations of each task to `<out_dir>/<name>/1.0.0/`."""
    if num_episodes_per_task < 1:
        raise ValueError(f"num_episodes_per_task must be at least 1, got {num_episodes_per_task}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {SPLITS}")
    unknown = sorted(set(tasks) - set(TASK_NAMES))
    if unknown:
        raise ValueError(f"unknown tasks {unknown}: expected some of {TASK_NAMES}")
    return write_demonstrations(
        out_dir,
        num_episodes_per_task,
        image_size,
        seed,
        workers,
        split,
        tuple(tasks),
        action_noise,
        name,
        overwrite,
        progress,
    )


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", help="root directory; the dataset goes to <out_dir>/<name>/1.0.0/")
    parser.add_argument("--num_episodes_per_task", type=int, default=40)
    parser.add_argument("--image_size", type=int, default=64, help="height and width of both views, px")
    parser.add_argument("--seed", type=int, default=0, help="episode i of a task uses seed + i")
    parser.add_argument("--workers", type=int, default=1, help="processes that run the expert and render")
    parser.add_argument("--split", choices=SPLITS, default="train")
    parser.add_argument("--tasks", nargs="+", choices=TASK_NAMES, default=list(TASK_NAMES))
    parser.add_argument("--action_noise", type=float, default=0.0, help="std of noise on executed (dx, dy)")
    parser.add_argument("--name", default=None, help="dataset name (default: tabletop, or tabletop_<split>)")
    parser.add_argument("--overwrite", action="store_true")


def generate_from_args(args: argparse.Namespace) -> GenerationReport:
    report = generate(
        args.out_dir,
        args.num_episodes_per_task,
        args.image_size,
        args.seed,
        args.workers,
        args.split,
        tuple(args.tasks),
        args.action_noise,
        args.name,
        args.overwrite,
    )
    print(report.summary())
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="craft-vla data generate", description=__doc__)
    add_generate_arguments(parser)
    report = generate_from_args(parser.parse_args(argv))
    return 0 if not report.failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
