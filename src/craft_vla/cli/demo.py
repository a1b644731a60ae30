"""`craft-vla demo`: the main job."""

from __future__ import annotations

import argparse
import time

import torch


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="craft-vla demo", description=__doc__)
    parser.add_argument("--toy", action="store_true", help="the toy backbone+head CRaFT run (seconds)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epsilon", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from craft_vla.demo.toy import run_toy_demo

    start = time.perf_counter()
    run_toy_demo(steps=args.steps, seed=args.seed, epsilon=args.epsilon)
    print(f"\nwall time {time.perf_counter() - start:.1f} s")
    return 0
