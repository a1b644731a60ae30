"""`craft-vla demo`: the embedded CPU testbed: representation collapse under SFT vs CRaFT.

    craft-vla demo                 # full run: 6 methods × 3 seeds, report in demo_report/
    craft-vla demo --quick         # one seed, two methods, small budget (CI smoke test)
    craft-vla demo --epsilon 0.02 --parts raw --methods sft_full craft     # an ablation
    craft-vla demo --toy           # the toy backbone+head CRaFT problem (seconds)
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch


def parse(argv: list[str]) -> argparse.Namespace:
    from craft_vla.demo.methods import METHODS
    from craft_vla.sim.tasks import TASK_NAMES

    parser = argparse.ArgumentParser(prog="craft-vla demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--toy", action="store_true", help="the toy CRaFT problem instead of the testbed")
    parser.add_argument("--quick", action="store_true", help="one seed, two methods, small budget (about 3 min)")
    parser.add_argument("--out_dir", type=Path, default=Path("demo_report"))
    parser.add_argument("--cache_dir", type=Path, default=None, help="where data and the snapshot are cached")
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS))
    parser.add_argument("--tasks", nargs="+", choices=TASK_NAMES, help="the suite's tasks fine-tuned on (default: reach pick_up)")
    parser.add_argument("--objects", type=int, help="objects per fine-tuning scene (default 1; 0: the suite's 3-5)")
    parser.add_argument("--episodes_per_task", type=int, help="demonstrations per fine-tuning task (default 300)")
    parser.add_argument("--action_noise", type=float,
                        help="DART: std of the noise on the executed (dx, dy) of the training demonstrations (default 0)")
    parser.add_argument("--steps", type=int, help="fine-tuning steps per run")
    parser.add_argument("--learning_rate", type=float)
    parser.add_argument("--adam_beta2", type=float, help="AdamW's β2 for every method (default 0.999)")
    parser.add_argument("--execute_steps", type=int, help="closed loop: replan after this many of a chunk's 8 actions (default 4)")
    parser.add_argument("--epsilon", type=float, help="retention budget ε (relative to the feature spread S by default)")
    parser.add_argument("--epsilon_mode", choices=("relative", "absolute"))
    parser.add_argument("--dual_lr", type=float, help="η_λ (default: 0.1/ε_absolute)")
    parser.add_argument("--lambda_max", type=float, help="cap on λ (default 0: no cap)")
    parser.add_argument("--raw_layer", type=int, help="m: the raw-latent layer anchored (default L/2)")
    parser.add_argument("--aq_layer", type=int, help="M: the action-query layer anchored (default L)")
    parser.add_argument("--parts", choices=("both", "raw", "aq"), help="which bridge parts are anchored")
    parser.add_argument("--pool", choices=("mean", "tokens"), help="mean pooling or per-token features")
    parser.add_argument("--anchor_batch_size", type=int)
    parser.add_argument("--fixed_penalty_weight", type=float)
    parser.add_argument("--workers", type=int, help="parallel fine-tuning processes (default 2)")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"),
                        help="of fine-tuning and the anchor cache: fp32 (default), bf16, or auto (bf16 on CPUs with bf16 matrix instructions)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the toy run")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    if args.toy:
        torch.set_num_threads(args.threads)
        from craft_vla.demo.toy import run_toy_demo

        start = time.perf_counter()
        run_toy_demo()
        print(f"\nwall time {time.perf_counter() - start:.1f} s")
        return 0
    from craft_vla.demo.run import DemoConfig, run_demo

    fields = {f.name for f in dataclasses.fields(DemoConfig)}
    overrides = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    for key in ("seeds", "methods", "tasks"):
        if key in overrides:
            overrides[key] = tuple(overrides[key])
    try:
        cfg = DemoConfig.quick_preset(**overrides) if args.quick else DemoConfig(**overrides)
    except ValueError as error:  # a setting the suite cannot run: say which, without a traceback
        raise SystemExit(f"craft-vla demo: {error}") from None
    run_demo(cfg)
    return 0
