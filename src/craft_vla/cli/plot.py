"""`craft-vla plot RUN_DIR`: λ and L_ret vs ε over training, from the run's metrics.jsonl."""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="craft-vla plot", description=__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="PNG path (default RUN_DIR/craft_dynamics.png)")
    args = parser.parse_args(argv)
    from craft_vla.training.plots import plot_craft_dynamics

    print(plot_craft_dynamics(args.run_dir, args.out))
    return 0
