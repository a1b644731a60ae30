"""A LeRobot v3 dataset written by lerobot's own writer, with reference values, and lerobot's loading speed.

Runs in an environment with the lerobot package ONLY (its v3 releases pin torch<2.12, craft-vla pins a newer
one, so the two never share a venv); it does not import craft_vla. Made with lerobot 0.4.4 (torch 2.10):

    python3.11 -m venv /tmp/lerobot_venv && /tmp/lerobot_venv/bin/pip install lerobot==0.4.4

Write (the LIBERO-in-LeRobot keys craft-vla maps by default; the root's name starts with "libero", so
craft-vla applies LIBERO's transforms; lerobot encodes the videos with its defaults: AV1, yuv420p, crf 30):

    /tmp/lerobot_venv/bin/python benchmarks/lerobot_reference.py /tmp/lerobot_ref/libero_reference

writes the dataset there and `<root>.npz` beside it: `episode_lengths`, `tasks` (one per episode), `action`
and `state` (all frames, in storage order, as written), `frame_indices` (a few global frame indices) and,
per camera, `source/<key>` (the frames given to add_frame) and `lerobot/<key>` (the same frames as
LeRobotDataset returns them, as uint8 HWC). tests/data/test_lerobot.py reads both with craft-vla's reader
(CRAFT_VLA_LEROBOT_REFERENCE=<root>).

Time lerobot's own iteration (LeRobotDataset in a torch DataLoader; its frame decoding, no transforms):

    /tmp/lerobot_venv/bin/python benchmarks/lerobot_reference.py /tmp/lerobot_ref/libero_reference --bench

prints {"samples_per_s": ...} as JSON; benchmarks/lerobot_loading.py --root ... --lerobot_python ... runs
it next to craft-vla's loader on the same root and samples.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local root: never reach for the hub

import numpy as np  # noqa: E402
import torch  # noqa: E402
from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

CAMERAS = ("observation.images.image", "observation.images.wrist_image")
STATE_DIM, ACTION_DIM = 8, 7  # LIBERO's: eef pos + axis-angle + 2 gripper joints; 6-DoF delta + gripper
TASKS = ("put the bowl on the plate", "open the top drawer", "push the plate to the front of the stove")
FPS = 10


def features(size: int) -> dict[str, dict]:
    video = {"dtype": "video", "shape": (size, size, 3), "names": ["height", "width", "channels"]}
    return {
        **{camera: dict(video) for camera in CAMERAS},
        "observation.state": {"dtype": "float32", "shape": (STATE_DIM,), "names": None},
        "action": {"dtype": "float32", "shape": (ACTION_DIM,), "names": None},
    }


def frame_image(size: int, t: int, episode: int, camera: int) -> np.ndarray:
    """A smooth colour gradient with a square moving across it: natural enough for a video codec, and each
    frame differs, so a decoder that returns a neighbouring frame fails the comparison."""
    y, x = np.mgrid[0:size, 0:size]
    image = np.stack([4 * x + 20 * episode, 4 * y + 60 * camera, (x + y) * 2], axis=-1) % 256
    side, top = size // 4, (size // 3 + 7 * camera) % (size - size // 4)
    left = (3 * t + 5 * episode) % (size - side)
    image[top : top + side, left : left + side] = (250, 40 + 50 * camera, 30)
    return image.astype(np.uint8)


def write(root: Path, episodes: int, size: int) -> dict[str, np.ndarray]:
    """The dataset through lerobot's recording API; returns what was given to it."""
    dataset = LeRobotDataset.create(
        f"local/{root.name}", fps=FPS, features=features(size), root=root, use_videos=True
    )
    rng = np.random.default_rng(0)
    lengths, tasks, actions, states, images = [], [], [], [], {c: [] for c in CAMERAS}
    for episode in range(episodes):
        length, task = 40 + 7 * episode, TASKS[episode % len(TASKS)]
        for t in range(length):
            frame = {c: frame_image(size, t, episode, i) for i, c in enumerate(CAMERAS)}
            frame["observation.state"] = rng.normal(size=STATE_DIM).astype(np.float32)
            frame["action"] = rng.uniform(-1, 1, ACTION_DIM).astype(np.float32)
            for camera in CAMERAS:
                images[camera].append(frame[camera])
            actions.append(frame["action"])
            states.append(frame["observation.state"])
            dataset.add_frame({**frame, "task": task})
        dataset.save_episode()
        lengths.append(length)
        tasks.append(task)
    dataset.finalize()
    return {
        "episode_lengths": np.array(lengths, dtype=np.int64),
        "tasks": np.array(tasks),
        "action": np.stack(actions),
        "state": np.stack(states),
        **{f"source/{c}": np.stack(v) for c, v in images.items()},
    }


def as_uint8(image: torch.Tensor) -> np.ndarray:
    """lerobot's float32 CHW in [0, 1] back to uint8 HWC (exact: lerobot divides uint8 by 255)."""
    return (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def reference(root: Path, written: dict[str, np.ndarray], backend: str) -> dict[str, np.ndarray]:
    """What lerobot reads back: checks its table against what was written, and decodes a few frames."""
    dataset = LeRobotDataset(f"local/{root.name}", root=root, video_backend=backend)
    total = int(written["episode_lengths"].sum())
    if dataset.meta.total_episodes != len(written["episode_lengths"]) or len(dataset) != total:
        raise RuntimeError(
            f"lerobot reads {dataset.meta.total_episodes} episodes / {len(dataset)} frames back"
        )
    ends = np.cumsum(written["episode_lengths"])
    indices = np.array([0, ends[0] - 1, ends[0] + 5, total - 1])  # first/last frames and one mid-episode
    items = [dataset[int(i)] for i in indices]
    for i, item in zip(indices, items, strict=True):
        np.testing.assert_array_equal(item["action"].numpy(), written["action"][i])
        np.testing.assert_array_equal(item["observation.state"].numpy(), written["state"][i])
    out = {**written, "frame_indices": indices}
    for camera in CAMERAS:
        out[f"source/{camera}"] = written[f"source/{camera}"][indices]
        out[f"lerobot/{camera}"] = np.stack([as_uint8(item[camera]) for item in items])
    return out


def bench(root: Path, args: argparse.Namespace) -> dict[str, float]:
    """Samples/s of one pass over `--samples` frames in the same seeded order as craft-vla's benchmark."""
    dataset = LeRobotDataset(f"local/{root.name}", root=root, video_backend=args.video_backend)
    ids = np.random.default_rng(0).permutation(len(dataset))[: args.samples].tolist()
    batches = [ids[i : i + args.batch_size] for i in range(0, len(ids), args.batch_size)]
    rates = []
    for _ in range(args.repeats):
        loader = DataLoader(dataset, batch_sampler=batches, num_workers=args.workers)
        start = time.perf_counter()  # worker start-up timed, as in craft-vla's benchmark
        for _ in loader:
            pass
        rates.append(len(ids) / (time.perf_counter() - start))
    return {"samples": len(ids), "samples_per_s": round(float(np.median(rates)), 1)}


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("root", type=Path, help="the dataset root to write (must not exist) or to time")
    parser.add_argument("--episodes", type=int, default=6)
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--bench", action="store_true", help="time lerobot's iteration of an existing root")
    parser.add_argument("--video_backend", default="pyav", help="lerobot's decoder: pyav or torchcodec")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.bench:
        print(
            json.dumps({"lerobot": _version(), "video_backend": args.video_backend, **bench(args.root, args)})
        )
        return
    written = write(args.root, args.episodes, args.image_size)
    values = reference(args.root, written, args.video_backend)
    np.savez(args.root.with_suffix(".npz"), lerobot_version=_version(), **values)
    print(
        f"wrote {args.root} ({len(written['episode_lengths'])} episodes) and {args.root.with_suffix('.npz')}"
    )


def _version() -> str:
    from importlib.metadata import version

    return version("lerobot")


if __name__ == "__main__":
    main()
