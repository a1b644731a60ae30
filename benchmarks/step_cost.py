"""Cost of a CRaFT optimizer step vs its floor: the SFT step plus one standalone anchor pass.

For the tiny preset and the "small" config of anchor_cache_throughput.py, side by side in one run,
each measured through `craft_vla.training.step.train_step` on a `Run` from `finetune.build_run`:
  SFT step           action pass, optimizer (`--use_craft False`);
  anchor pass        forward + backward of the anchor loss alone (VLM truncated at M, cached f~);
  CRaFT step         action pass, stash, anchor pass, projection, dual step, optimizer;
with the anchor batch = batch and = batch/4. Two-pass CRaFT cannot cost less than SFT step + anchor
pass; overhead = CRaFT step / (SFT step + anchor pass) − 1 is what the orchestration, the stash, the
projection and the dual update add (target: ≤ 10 %). Batches are loaded before timing; every variant
runs `--steps` steps per round, rounds interleave the variants, and the table gives medians over rounds
(the overhead: the median of the per-round ratios, whose terms share the machine's load).

    python benchmarks/step_cost.py --threads 2
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from anchor_cache_throughput import SMALL, bench_config, register_small_preset, write_bench_dataset

from craft_vla.craft import accumulate_backward
from craft_vla.training.build_cache import build_cache
from craft_vla.training.finetune import Run, build_run
from craft_vla.training.step import anchor_loss, train_step


def preloaded(run: Run, count: int = 4) -> tuple[Callable[[], dict], Callable[[], dict] | None]:
    """Endless cycles over `count` training batches and `count` anchor batches (with f~) of the run."""
    batches = itertools.cycle([next(run.batches) for _ in range(count)])
    anchors = (
        itertools.cycle([next(run.anchor_batches) for _ in range(count)]) if run.anchor_batches else None
    )
    return (lambda: next(batches)), (lambda: next(anchors)) if anchors else None


def step_variants(cfg, batch_size: int) -> dict[str, Callable[[], None]]:
    """One call = one timed unit: a full optimizer step, or one standalone anchor pass."""
    sft = build_run(dataclasses.replace(cfg, use_craft=False, run_id_override="sft"))
    next_batch, _ = preloaded(sft)
    variants = {"SFT step": lambda: train_step(sft.state, [next_batch()], None)}
    for label, anchor_batch_size in (("B", batch_size), ("B/4", batch_size // 4)):
        run = build_run(
            dataclasses.replace(
                cfg, craft_anchor_batch_size=anchor_batch_size, run_id_override=f"craft{anchor_batch_size}"
            )
        )
        batch, anchor = preloaded(run)
        loss = anchor_loss(run.state.anchor_spec, run.state.autocast)

        def anchor_pass(run=run, anchor=anchor, loss=loss) -> None:
            accumulate_backward(run.state.model, [anchor()], loss)
            run.state.optimizer.zero_grad(set_to_none=True)

        variants[f"anchor pass {label}"] = anchor_pass
        variants[f"CRaFT step {label}"] = lambda run=run, batch=batch, anchor=anchor: train_step(
            run.state, [batch()], [anchor()]
        )
    return variants


def measure(
    variants: dict[str, Callable[[], None]], warmup: int, rounds: int, steps: int
) -> dict[str, list[float]]:
    """Mean seconds per call of each variant, one value per round; variants interleaved within each round."""
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            times[name].append((time.perf_counter() - start) / steps)
    return times


def overhead(times: dict[str, list[float]], label: str) -> float:
    """Median over rounds of CRaFT step / (SFT step + anchor pass) − 1, each ratio
    from one round's timings."""
    ratios = [
        c / (s + a)
        for s, a, c in zip(times["SFT step"], times[f"anchor pass {label}"], times[f"CRaFT step {label}"])
    ]
    return statistics.median(ratios) - 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3, help="steps per variant per round")
    parser.add_argument("--models", nargs="+", default=["tiny", SMALL])
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="bf16: autocast, and on a CPU attention as matmuls (training.setup.place_model)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    register_small_preset()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data_root = write_bench_dataset(Path(tmp) / "data", num_episodes=8)
        for i, model in enumerate(args.models):
            cfg = bench_config(
                model,
                data_root,
                Path(tmp) / f"work-{i}",
                args.batch_size,
                learning_rate=1e-5,
                precision=args.precision,
            )
            build_cache(cfg)
            rows.append(
                (model, measure(step_variants(cfg, args.batch_size), args.warmup, args.rounds, args.steps))
            )
    print(
        f"\nthreads {args.threads}, {args.precision}, batch size B = {args.batch_size}, median over "
        f"{args.rounds} rounds of {args.steps} steps; ms"
    )
    print(
        f"{'model':12s} {'SFT':>8s} {'anchor':>8s} {'CRaFT':>8s} {'floor':>8s} "
        f"{'overhead':>8s}   anchor batch"
    )
    for model, times in rows:
        t = {name: statistics.median(values) for name, values in times.items()}
        for label in ("B", "B/4"):
            sft, anchor, craft = t["SFT step"], t[f"anchor pass {label}"], t[f"CRaFT step {label}"]
            print(
                f"{model:12s} {1e3 * sft:8.1f} {1e3 * anchor:8.1f} {1e3 * craft:8.1f} "
                f"{1e3 * (sft + anchor):8.1f} {100 * overhead(times, label):7.1f}%   {label}"
            )


if __name__ == "__main__":
    main()
