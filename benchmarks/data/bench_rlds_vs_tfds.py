"""Throughput of our TF-free RLDS reader against tensorflow-datasets on the same files.

Run with the TensorFlow environment's Python (our reader needs only numpy, protobuf, pillow,
google-crc32c and simplejpeg there):

    PYTHONPATH=src /work/tfvenv/bin/python benchmarks/data/bench_rlds_vs_tfds.py \
        --data /tmp/bench_tfds --episodes 40

It builds a LIBERO-like dataset with TFDS itself (two 256 px JPEG cameras per step, see
tfds_libero_like.py) unless it exists, then times, each in a fresh process:
  tfds            full decode of every step with TFDS defaults (TF's own thread pools)
  tfds-1thread    the same with TF limited to one thread
  ours            RLDSReader.read_episode for every episode, one process
  ours-2proc      the same split over 2 processes
  ours-random     RLDSReader.get_step images for random (episode, step) pairs: the training access pattern
Modes run in alternating rounds; prints the median steps/s and images/s of each mode as a JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
DATASET = "libero_like_no_noops/1.0.0"


def run_tfds(data_dir: str, threads: int) -> tuple[int, float]:
    import tensorflow as tf
    import tensorflow_datasets as tfds

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    builder = tfds.builder_from_directory(data_dir)
    read_config = tfds.ReadConfig(
        num_parallel_calls_for_decode=threads or None, num_parallel_calls_for_interleave_files=threads or None
    )
    start, steps = time.perf_counter(), 0
    dataset = builder.as_dataset(split="train", shuffle_files=False, read_config=read_config)
    if threads:
        options = tf.data.Options()
        options.threading.private_threadpool_size = threads
        dataset = dataset.with_options(options)
    for episode in tfds.as_numpy(dataset):
        for step in episode["steps"]:
            assert step["observation"]["image"].shape[-1] == 3
            steps += 1
    return steps, time.perf_counter() - start


def _read_episodes(args: tuple[str, list[int]]) -> int:
    from craft_vla.data.rlds import RLDSReader

    data_dir, episodes = args
    reader = RLDSReader(data_dir)
    return sum(len(reader.read_episode(e)["steps"]["action"]) for e in episodes)


def run_ours(data_dir: str, processes: int) -> tuple[int, float]:
    from craft_vla.data.rlds import RLDSReader

    num_episodes = RLDSReader(data_dir).num_episodes  # builds the index outside the timing
    start = time.perf_counter()
    if processes == 1:
        steps = _read_episodes((data_dir, list(range(num_episodes))))
    else:
        parts = [(data_dir, list(range(p, num_episodes, processes))) for p in range(processes)]
        with Pool(processes) as pool:
            steps = sum(pool.map(_read_episodes, parts))
    return steps, time.perf_counter() - start


def run_ours_random(data_dir: str, samples: int = 2000) -> tuple[int, float]:
    import numpy as np

    from craft_vla.data.rlds import RLDSReader

    reader = RLDSReader(data_dir)
    rng = np.random.default_rng(0)
    episodes = rng.integers(0, reader.num_episodes, samples)
    start = time.perf_counter()
    for episode in episodes:
        step = int(rng.integers(0, reader.episode_lengths[episode]))
        reader.step_image(int(episode), step, "observation/image")
        reader.step_image(int(episode), step, "observation/wrist_image")
        reader.step_fields(int(episode))
    return samples, time.perf_counter() - start


def measure(mode: str, data_dir: str) -> dict:
    steps, seconds = {
        "tfds": lambda: run_tfds(data_dir, 0),
        "tfds-1thread": lambda: run_tfds(data_dir, 1),
        "ours": lambda: run_ours(data_dir, 1),
        "ours-2proc": lambda: run_ours(data_dir, 2),
        "ours-random": lambda: run_ours_random(data_dir),
    }[mode]()
    return {
        "mode": mode,
        "steps": steps,
        "seconds": round(seconds, 3),
        "steps_per_s": round(steps / seconds, 1),
        "images_per_s": round(2 * steps / seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/tmp/bench_tfds")
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--mode", help="run one mode in this process (used internally)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    data_dir = str(Path(args.data) / DATASET)
    if args.mode:
        print(json.dumps(measure(args.mode, data_dir)))
        return
    if not Path(data_dir).is_dir():
        script = Path(__file__).with_name("tfds_libero_like.py")
        subprocess.run(
            [sys.executable, str(script), "build", "--out", args.data, "--episodes", str(args.episodes)],
            check=True,
            capture_output=True,
        )
    size = sum(p.stat().st_size for p in Path(data_dir).iterdir())
    print(json.dumps({"data_dir": data_dir, "megabytes": round(size / 2**20, 1), "cpus": os.cpu_count()}))
    modes = ("tfds", "tfds-1thread", "ours", "ours-2proc", "ours-random")
    results: dict[str, list[dict]] = {mode: [] for mode in modes}
    for _ in range(args.repeats):  # rounds alternate the modes, so a busy machine slows all of them alike
        for mode in modes:
            out = (
                subprocess.run(
                    [sys.executable, __file__, "--data", args.data, "--mode", mode],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            results[mode].append(json.loads(out))
    for mode in modes:
        runs = sorted(results[mode], key=lambda r: r["steps_per_s"])
        median = runs[len(runs) // 2]
        print(
            json.dumps({**median, "runs_steps_per_s": [r["steps_per_s"] for r in results[mode]]}), flush=True
        )


if __name__ == "__main__":
    main()
