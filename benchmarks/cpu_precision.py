"""Training steps of the demo's model on a CPU: float32 vs bf16 autocast, with SDPA or matmul attention.

What `--precision bf16` buys where the CPU multiplies bf16 natively (AVX512-BF16, AMX), and why the trainer
then computes attention with plain matmuls (`craft_vla.models.attention`): a random-init "craft-demo" policy
(`--model craft-demo`) on demonstrations of the embedded suite, batch 16, full fine-tuning, an SFT step and
a CRaFT step (anchor batch 16, cache built under the same precision) through `training.step.train_step`;
variants interleaved over rounds, medians reported. Also the raw
throughput of one (1248 × 128) @ (128 × 384) matmul, the shape of the LLM's MLP at batch 16.

    python benchmarks/cpu_precision.py --threads 1
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch
from demo_levers import demo_finetune_config
from step_cost import measure, preloaded

from craft_vla.demo.config import native_bf16_cpu
from craft_vla.demo.model import DEMO_PRESET
from craft_vla.models.attention import set_matmul_attention
from craft_vla.training.build_cache import build_cache
from craft_vla.training.finetune import build_run
from craft_vla.training.step import train_step


def matmul_gflops(dtype: torch.dtype, repeats: int = 200) -> float:
    a, b = torch.randn(1248, 128, dtype=dtype), torch.randn(128, 384, dtype=dtype)
    for _ in range(5):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * 1248 * 128 * 384 * repeats / (time.perf_counter() - start) / 1e9


def use_sdpa(model: torch.nn.Module) -> None:
    """Undo `set_matmul_attention`: PyTorch's fused SDPA in the LLM and both towers."""
    from transformers import PreTrainedModel

    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            module.set_attn_implementation("sdpa")
        if hasattr(module, "fused_attn"):
            module.fused_attn = True


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="steps per variant per round")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU bf16 matrix instructions: {native_bf16_cpu()}")
    print(
        f"matmul (1248x128 @ 128x384): fp32 {matmul_gflops(torch.float32):.0f} GFLOP/s, "
        f"bf16 {matmul_gflops(torch.bfloat16):.0f} GFLOP/s"
    )
    with tempfile.TemporaryDirectory() as tmp:
        base = demo_finetune_config(Path(tmp), args.batch_size)
        variants = {}
        for step in ("SFT", "CRaFT"):
            for label, precision, sdpa in (
                ("fp32, SDPA", "fp32", True),
                ("fp32, matmul attention", "fp32", False),
                ("bf16, SDPA", "bf16", True),
                ("bf16, matmul attention", "bf16", False),
            ):
                cfg = dataclasses.replace(
                    base, precision=precision, run_id_override=f"{step}-{precision}-{sdpa}"
                )
                if step == "CRaFT":
                    cfg = dataclasses.replace(
                        cfg, use_craft=True, craft_cache_path=str(Path(tmp) / f"cache-{precision}")
                    )
                    if not Path(cfg.craft_cache_path, "meta.json").exists():
                        build_cache(cfg)
                run = build_run(cfg)
                if sdpa:
                    use_sdpa(run.state.model)
                else:
                    set_matmul_attention(run.state.model)
                next_batch, next_anchor = preloaded(run)
                anchors = (lambda next_anchor=next_anchor: [next_anchor()]) if next_anchor else (lambda: None)
                variants[f"{step} step, {label}"] = lambda run=run, next_batch=next_batch, anchors=anchors: (
                    train_step(run.state, [next_batch()], anchors())
                )
        times = measure(variants, warmup=3, rounds=args.rounds, steps=args.steps)
    print(
        f"\nthreads {args.threads}, batch {args.batch_size} (anchor batch the same), {DEMO_PRESET!r}, "
        f"median over {args.rounds} rounds of {args.steps} steps"
    )
    for name, values in times.items():
        reference = statistics.median(times[name.split(",")[0] + ", fp32, SDPA"])
        median = statistics.median(values)
        print(f"{name:34s} {1e3 * median:7.1f} ms   {reference / median:4.2f}x its float32 step")


if __name__ == "__main__":
    main()
