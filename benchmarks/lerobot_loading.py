"""Loading throughput of LeRobot v3 data: craft-vla's reader with the training transforms, against the same
episodes as RLDS and against lerobot's own `LeRobotDataset` iteration on the same root.

By default the embedded suite's expert demonstrations are written once as RLDS (JPEG) and once as LeRobot v3
(lossless H.264 videos), at `--image_size` px; `--root` times an existing LeRobot root instead (e.g. one
written by lerobot itself with benchmarks/lerobot_reference.py). Each loader draws `--samples` samples in a
seeded random order (the same frames for every loader) through a torch DataLoader with `--workers` workers
and `--batch_size`:
  craft-vla lerobot   VLADataset over LeRobotReader: decode both cameras, augment, resize to 224, normalise,
                      tokenise, chunk and normalise actions (everything a training batch needs);
    ..., no augmentation     the same without the random crop and colour jitter (build-cache's setting);
    ..., decoding only       the reader's frames (both cameras, action, state, task): lerobot's share of work;
  craft-vla rlds      the same over RLDSReader (JPEG decoding; not with --root);
  lerobot             lerobot's LeRobotDataset over the same LeRobot root: its frame decoding only, no
                      transforms. lerobot pins torch<2.12, so it runs in its own venv: `--lerobot_python`
                      runs benchmarks/lerobot_reference.py --bench there, one pass per repeat.
Target (issue 17): craft-vla lerobot >= 1.0 x lerobot. Samples/s are medians over `--repeats`, the loaders
interleaved so that drifts of the machine hit each alike.

    OMP_NUM_THREADS=1 python benchmarks/lerobot_loading.py --episodes_per_task 2 --workers 2
    OMP_NUM_THREADS=1 python benchmarks/lerobot_loading.py --root /tmp/lerobot_ref/libero_reference \
        --lerobot_python /tmp/lerobot_venv/bin/python --workers 2 --batch_size 16
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from statistics import median

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from craft_vla.data.collate import VLACollator
from craft_vla.data.dataset import SampleConfig, VLADataset
from craft_vla.data.formats import open_reader, reader_statistics
from craft_vla.data.lerobot_writer import write_lerobot_dataset
from craft_vla.data.rlds_writer import write_rlds_dataset
from craft_vla.data.tokenizers import WordTokenizer
from craft_vla.data.transforms import infer_dataset_kind
from craft_vla.sim.demonstrations import episode_specs, iter_demonstrations
from craft_vla.sim.tasks import TASK_NAMES
from craft_vla.training import setup


def write_both(root: Path, episodes_per_task: int, image_size: int) -> tuple[Path, Path]:
    specs = episode_specs(TASK_NAMES, episodes_per_task, 0)
    episodes = [e for _, e, _ in iter_demonstrations(specs, image_size=image_size, progress=False)]
    rlds = write_rlds_dataset(root / "rlds", "tabletop", episodes)
    return rlds, write_lerobot_dataset(root / "lerobot", "tabletop", episodes)


def craft_vla_loader(path: Path, args: argparse.Namespace, augment: bool = True) -> DataLoader:
    reader = open_reader(path)
    tokenizer = WordTokenizer.from_texts(sorted(setup.episode_instructions(reader)))
    stats = {reader.name: reader_statistics(reader, infer_dataset_kind(reader.name))}
    dataset = VLADataset([reader], tokenizer, SampleConfig(augment=augment), statistics=stats)
    ids = np.random.default_rng(0).permutation(dataset.sample_ids)[: args.samples].tolist()
    batches = [ids[i : i + args.batch_size] for i in range(0, len(ids), args.batch_size)]
    collate = VLACollator(pad_token_id=tokenizer.pad_token_id)
    return DataLoader(dataset, batch_sampler=batches, collate_fn=collate, num_workers=args.workers)


class Frames(Dataset):
    """One frame per index in storage order, as the reader returns it (both cameras decoded, the step's
    action, state and instruction): the work lerobot's `LeRobotDataset.__getitem__` does, no transforms."""

    def __init__(self, path: Path) -> None:
        self.reader = open_reader(path)
        lengths = np.asarray(self.reader.episode_lengths)
        self.starts = np.cumsum(lengths) - lengths

    def __len__(self) -> int:
        return int(self.reader.num_steps)

    def __getitem__(self, index: int) -> dict:
        episode = int(np.searchsorted(self.starts, index, side="right")) - 1
        return self.reader.get_step(episode, index - int(self.starts[episode]))


def frames_loader(path: Path, args: argparse.Namespace) -> DataLoader:
    dataset = Frames(path)
    ids = np.random.default_rng(0).permutation(len(dataset))[: args.samples].tolist()
    batches = [ids[i : i + args.batch_size] for i in range(0, len(ids), args.batch_size)]
    return DataLoader(dataset, batch_sampler=batches, num_workers=args.workers)


def lerobot_samples_per_second(python: str, root: Path, num_samples: int, args: argparse.Namespace) -> float:
    """One pass of lerobot's own loader over `root`, timed inside lerobot's venv (start-up untimed)."""
    script = Path(__file__).with_name("lerobot_reference.py")
    options = ["--samples", num_samples, "--batch_size", args.batch_size, "--workers", args.workers]
    command = [python, str(script), str(root), "--bench", "--repeats", "1", *map(str, options)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["samples_per_s"])


def samples_per_second(make: Callable[[], DataLoader], num_samples: int) -> float:
    """One pass of a fresh loader, built untimed (worker start-up timed, as at each training start)."""
    loader = make()
    start = time.perf_counter()
    for _ in loader:
        pass
    return num_samples / (time.perf_counter() - start)


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--episodes_per_task", type=int, default=2)
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--root", type=Path, help="an existing LeRobot root to time (default: the suite)")
    parser.add_argument("--lerobot_python", help="the python of a venv with lerobot, to time its loader too")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        if args.root is None:
            rlds, lerobot = write_both(Path(tmp), args.episodes_per_task, args.image_size)
        else:
            rlds, lerobot = None, args.root
        num = min(args.samples, open_reader(lerobot).num_steps)
        makers = {
            "craft-vla lerobot": partial(craft_vla_loader, lerobot, args),
            "craft-vla lerobot, no augmentation": partial(craft_vla_loader, lerobot, args, augment=False),
            "craft-vla lerobot, decoding only": partial(frames_loader, lerobot, args),
        }
        if rlds is not None:
            makers["craft-vla rlds"] = partial(craft_vla_loader, rlds, args)
        loaders = {name: partial(samples_per_second, make, num) for name, make in makers.items()}
        if args.lerobot_python:
            loaders["lerobot"] = lambda: lerobot_samples_per_second(args.lerobot_python, lerobot, num, args)
        rates: dict[str, list[float]] = {name: [] for name in loaders}
        for _ in range(args.repeats):  # interleaved, so drifts of the machine hit every loader alike
            for name, measure in loaders.items():
                rates[name].append(measure())
        result = {name: round(median(r), 1) for name, r in rates.items()}
        if "lerobot" in result:
            for name in [n for n in result if n.startswith("craft-vla lerobot")]:
                result[f"{name} / lerobot"] = round(result[name] / result["lerobot"], 2)
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        print(json.dumps({"samples": num, **settings, "samples_per_s": result}, indent=2))


if __name__ == "__main__":
    main()
