"""What makes a `craft-vla demo` run cheaper on this CPU: the fine-tuning step's parts, and the cores' use.

On the demo's model ("craft-demo", batch 16, full fine-tuning, float32, attention as the trainer runs it),
over demonstrations of the embedded suite:
1. the parts of a CRaFT step, one thread, interleaved rounds, medians: the SFT step, the CRaFT step, the
   anchor pass (forward and backward of L_ret) and the anchor forward alone (no grad). Sharing the action
   pass's forward with the anchor pass could save at most the anchor forward, so CRaFT step / (CRaFT step −
   anchor forward) bounds that lever;
2. workers × threads: SFT steps per second of the whole machine with one process of 2 threads against two
   processes of 1 thread each running at once (the demo's two fine-tuning workers).

    python benchmarks/demo_levers.py --rounds 5 --steps 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from step_cost import measure, preloaded

from craft_vla.demo.model import DEMO_PRESET
from craft_vla.sim.demonstrations import write_demonstrations
from craft_vla.sim.world import WorldConfig
from craft_vla.training.build_cache import build_cache
from craft_vla.training.config import FinetuneConfig
from craft_vla.training.finetune import build_run
from craft_vla.training.step import train_step


def demo_finetune_config(root: Path, batch_size: int = 16) -> FinetuneConfig:
    """Demonstrations of the demo's two tasks under `root`, and a full fine-tuning config of the demo's
    model on them (float32, no augmentation, no checkpoints)."""
    write_demonstrations(
        root,
        8,
        64,
        tasks=("reach", "pick_up"),
        name="tabletop",
        progress=False,
        config=WorldConfig(min_objects=1, max_objects=1),
    )
    return FinetuneConfig(
        model=DEMO_PRESET,
        data_root_dir=root,
        dataset_name="tabletop",
        run_root_dir=root / "runs",
        batch_size=batch_size,
        use_lora=False,
        image_aug=False,
        save_freq=10**9,
        learning_rate=1e-5,
    )


def demo_run_config(root: Path, batch_size: int = 16) -> FinetuneConfig:
    """`demo_finetune_config` with CRaFT on and its anchor cache built."""
    import dataclasses

    cfg = dataclasses.replace(
        demo_finetune_config(root, batch_size), use_craft=True, craft_cache_path=str(root / "cache")
    )
    build_cache(cfg)
    return cfg


def step_parts(cfg: FinetuneConfig, rounds: int, steps: int) -> dict[str, float]:
    """Median seconds of the SFT step, the CRaFT step, the anchor pass and the anchor forward."""
    import dataclasses

    from craft_vla.craft import accumulate_backward
    from craft_vla.training.step import anchor_loss

    sft = build_run(dataclasses.replace(cfg, use_craft=False, run_id_override="sft"))
    craft = build_run(dataclasses.replace(cfg, run_id_override="craft"))
    sft_batch, _ = preloaded(sft)
    batch, anchor = preloaded(craft)
    state = craft.state
    loss = anchor_loss(state.anchor_spec, state.autocast)

    def anchor_pass() -> None:
        accumulate_backward(state.model, [anchor()], loss)
        state.optimizer.zero_grad(set_to_none=True)

    def anchor_forward() -> None:
        with torch.no_grad(), state.autocast():
            state.model(anchor(), anchor_spec=state.anchor_spec)

    variants = {
        "SFT step": lambda: train_step(sft.state, [sft_batch()], None),
        "CRaFT step": lambda: train_step(state, [batch()], [anchor()]),
        "anchor pass": anchor_pass,
        "anchor forward": anchor_forward,
    }
    times = measure(variants, warmup=3, rounds=rounds, steps=steps)
    return {name: statistics.median(values) for name, values in times.items()}


def worker(cfg_root: Path, threads: int, steps: int) -> None:
    """Time `steps` SFT steps with `threads` threads; print steps per second as JSON."""
    torch.set_num_threads(threads)
    import dataclasses

    cfg = dataclasses.replace(
        demo_run_config(cfg_root), use_craft=False, run_id_override=f"w{time.time_ns()}", overwrite=True
    )
    run = build_run(cfg)
    next_batch, _ = preloaded(run)
    for _ in range(3):
        train_step(run.state, [next_batch()], None)
    start = time.perf_counter()
    for _ in range(steps):
        train_step(run.state, [next_batch()], None)
    print(json.dumps({"steps_per_s": steps / (time.perf_counter() - start)}))


def machine_throughput(processes: int, threads: int, steps: int) -> float:
    """SFT steps per second of `processes` concurrent workers of `threads` threads each, summed."""
    procs = []
    for _ in range(processes):
        root = tempfile.mkdtemp()
        command = [
            sys.executable,
            __file__,
            "--worker",
            root,
            "--threads",
            str(threads),
            "--steps",
            str(steps),
        ]
        procs.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent))
    outputs = [p.communicate()[0] for p in procs]
    return sum(json.loads(out.strip().splitlines()[-1])["steps_per_s"] for out in outputs)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4, help="steps per variant per round")
    parser.add_argument("--throughput_steps", type=int, default=40)
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.worker, args.threads, args.steps)
        return
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        parts = step_parts(demo_run_config(Path(tmp)), args.rounds, args.steps)
    print(f"\n{DEMO_PRESET!r}, batch 16 (anchor batch the same), float32, one thread, medians:")
    for name, seconds in parts.items():
        print(f"  {name:15s} {1e3 * seconds:7.1f} ms")
    bound = parts["CRaFT step"] / (parts["CRaFT step"] - parts["anchor forward"])
    print(f"  sharing the anchor forward with the action pass: at most {bound:.2f}x per CRaFT step")
    one = machine_throughput(1, 2, args.throughput_steps)
    two = machine_throughput(2, 1, args.throughput_steps)
    print(f"\nSFT steps/s of the machine: 1 process x 2 threads {one:.2f}, 2 processes x 1 thread {two:.2f}")
    print(f"  two workers of one thread: {two / one:.2f}x one worker of two threads")


if __name__ == "__main__":
    main()
