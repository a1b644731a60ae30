"""Anchor-cache build throughput vs the plain no-grad forward of the same model and batch size.

For the tiny preset and a "small" config (tiny with a 256-wide, 8-layer LLM and 64 px images), on a
synthetic RLDS dataset written to a temporary directory:
  forward      `policy(batch, anchor_spec=spec)` under no_grad on batches collated beforehand (the floor);
  load+forward the same, collating each batch from the dataset first (what any pass over the data costs);
  build        `craft-vla build-cache` (`build_cache(cfg)`): loading, forward, shard writing, finalisation.
Target (issue 6): build ≥ 0.9 × forward. Samples/s are medians over `--repeats`, measured interleaved.

    python benchmarks/anchor_cache_throughput.py --threads 2
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import craft_vla.training.build_cache as build_cache_module
from craft_vla.data.collate import VLACollator
from craft_vla.data.rlds_writer import write_rlds_dataset
from craft_vla.models.config import PRESETS, VLAAdapterConfig
from craft_vla.training import setup
from craft_vla.training.config import FinetuneConfig
from craft_vla.training.finetune import build_run

DATASET = "bench_tabletop"
SMALL = "bench-small"


def small_config() -> VLAAdapterConfig:
    """tiny with a 256-wide, 8-layer LLM and 64 px images (128 patches for two views):
    12.7 M parameters in all."""
    tiny = PRESETS["tiny"]()
    llm = dataclasses.replace(
        tiny.llm, hidden_size=256, num_hidden_layers=8, num_attention_heads=8, intermediate_size=768
    )
    return dataclasses.replace(tiny, llm=llm, image_size=64)


def register_small_preset() -> None:
    """Make `--model bench-small` resolvable by the trainer's setup for this process."""
    PRESETS[SMALL] = small_config


def synthetic_episode(rng: np.random.Generator, length: int, image_size: int) -> dict:
    """One RLDS episode of random images, 8-D state and 7-D actions under one of three instructions."""
    images = rng.integers(0, 256, size=(length, image_size, image_size, 3), dtype=np.uint8)
    flags = np.arange(length)
    return {
        "steps": {
            "observation": {
                "image": images,
                "wrist_image": images[:, ::-1].copy(),
                "state": rng.normal(size=(length, 8)).astype(np.float32),
            },
            "action": rng.uniform(-1, 1, size=(length, 7)).astype(np.float32),
            "language_instruction": ("pick up the cube", "push the ball", "open the drawer")[
                int(rng.integers(3))
            ],
            "reward": np.zeros(length, np.float32),
            "discount": np.ones(length, np.float32),
            "is_first": flags == 0,
            "is_last": flags == length - 1,
            "is_terminal": flags == length - 1,
        },
    }


def write_bench_dataset(
    root: Path, num_episodes: int, length: int = 10, image_size: int = 64, seed: int = 0
) -> Path:
    """`num_episodes` × `length` samples as the RLDS dataset `bench_tabletop` under `root`."""
    rng = np.random.default_rng(seed)
    write_rlds_dataset(
        root,
        DATASET,
        [synthetic_episode(rng, length, image_size) for _ in range(num_episodes)],
        overwrite=True,
    )
    return root


def bench_config(model: str, data_root: Path, work_dir: Path, batch_size: int, **overrides) -> FinetuneConfig:
    """A CRaFT fine-tuning config on the benchmark dataset (full fine-tuning, no augmentation)."""
    base = FinetuneConfig(
        model=model,
        data_root_dir=data_root,
        dataset_name=DATASET,
        run_root_dir=work_dir / "runs",
        batch_size=batch_size,
        use_lora=False,
        image_aug=False,
        use_craft=True,
        craft_cache_path=str(work_dir / "cache"),
        save_freq=10**9,
    )
    return dataclasses.replace(base, **overrides)


def measure_forward(cfg: FinetuneConfig) -> tuple[Callable[[], float], Callable[[], float], int]:
    """Seconds for one no-grad anchor forward over the dataset, batch by batch: on batches collated
    beforehand, and collating each batch from the dataset first; and the number of samples."""
    run = build_run(dataclasses.replace(cfg, use_craft=False))
    policy, dataset = run.state.model.eval(), run.dataset
    spec = setup.anchor_spec(cfg, policy.config.llm.num_hidden_layers)
    collate = VLACollator(pad_token_id=dataset.tokenizer.pad_token_id)
    ids = dataset.sample_ids
    chunks = [ids[k : k + cfg.batch_size] for k in range(0, len(ids), cfg.batch_size)]
    collated = [collate([dataset[int(i)] for i in chunk]) for chunk in chunks]

    @torch.no_grad()
    def forward(load: bool) -> float:
        start = time.perf_counter()
        for chunk, batch in zip(chunks, collated):
            policy(collate([dataset[int(i)] for i in chunk]) if load else batch, anchor_spec=spec)
        return time.perf_counter() - start

    return lambda: forward(False), lambda: forward(True), len(ids)


def measure_build(cfg: FinetuneConfig, work_dir: Path) -> Callable[[], float]:
    """Seconds of `build_anchor_cache` (load, forward, write, finalise) inside `build_cache`,
    each into a new directory."""
    timings, count = [], [0]
    builder = build_cache_module.build_anchor_cache

    def timed_builder(*args, **kwargs):
        start = time.perf_counter()
        result = builder(*args, **kwargs)
        timings.append(time.perf_counter() - start)
        return result

    def measure() -> float:
        count[0] += 1
        build_cache_module.build_anchor_cache = timed_builder  # time the builder, not the set-up around it
        try:
            build_cache_module.build_cache(
                dataclasses.replace(cfg, craft_cache_path=str(work_dir / f"cache-{count[0]}"))
            )
        finally:
            build_cache_module.build_anchor_cache = builder
        return timings[-1]

    return measure


def benchmark(
    model: str, data_root: Path, work_dir: Path, batch_size: int, repeats: int, num_workers: int
) -> dict[str, float]:
    cfg = bench_config(
        model, data_root, work_dir, batch_size, craft_cache_shard_size=1024, num_workers=num_workers
    )
    forward, load_forward, num_samples = measure_forward(cfg)
    measures = {"forward": forward, "load+forward": load_forward, "build": measure_build(cfg, work_dir)}
    for measure in measures.values():  # warm-up
        measure()
    rates: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(repeats):  # interleaved, so that load on the machine hits every variant alike
        for name, measure in measures.items():
            rates[name].append(num_samples / measure())
    result = {name: statistics.median(values) for name, values in rates.items()}
    result["samples"] = num_samples
    result["build/forward"] = result["build"] / result["forward"]
    result["build/load+forward"] = result["build"] / result["load+forward"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--episodes", type=int, default=24, help="of 10 steps each")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=["tiny", SMALL])
    parser.add_argument(
        "--num_workers",
        type=int,
        default=0,
        help="build-cache loader processes (0: load in the main process; on a GPU with a prefetch thread)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    register_small_preset()
    with tempfile.TemporaryDirectory() as tmp:
        data_root = write_bench_dataset(Path(tmp) / "data", args.episodes)
        print(
            f"threads {args.threads}, batch size {args.batch_size}, num_workers {args.num_workers}, "
            f"median of {args.repeats}; samples/s"
        )
        print(
            f"{'model':12s} {'samples':>7s} {'forward':>9s} {'load+fwd':>9s} {'build':>9s} "
            f"{'build/fwd':>9s} {'build/l+f':>9s}"
        )
        for i, model in enumerate(args.models):
            r = benchmark(
                model, data_root, Path(tmp) / f"work-{i}", args.batch_size, args.repeats, args.num_workers
            )
            print(
                f"{model:12s} {r['samples']:7d} {r['forward']:9.1f} {r['load+forward']:9.1f} "
                f"{r['build']:9.1f} {r['build/forward']:9.2f} {r['build/load+forward']:9.2f}"
            )


if __name__ == "__main__":
    main()
