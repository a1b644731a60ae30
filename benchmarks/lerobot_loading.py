"""Loading throughput of LeRobot v3 data: craft-vla's reader with the training transforms, against the same
episodes as RLDS and against lerobot's own `LeRobotDataset` iteration (when the lerobot package is installed).

The embedded suite's expert demonstrations are written once as RLDS (JPEG) and once as LeRobot v3 (lossless
H.264 videos), at `--image_size` px. Each loader draws `--samples` samples in a seeded random order through a
torch DataLoader with `--workers` workers and `--batch_size`:
  craft-vla lerobot   VLADataset over LeRobotReader: decode both cameras, augment, resize to 224, normalise,
                      tokenise, chunk and normalise actions (everything a training batch needs);
  craft-vla rlds      the same over RLDSReader (JPEG decoding);
  lerobot             lerobot's LeRobotDataset over the same root: its frame decoding only, no transforms.
Target (issue 17): craft-vla lerobot >= 1.0 x lerobot. Samples/s are medians over `--repeats`.

    OMP_NUM_THREADS=1 python benchmarks/lerobot_loading.py --episodes_per_task 2 --workers 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median

import numpy as np
import torch
from torch.utils.data import DataLoader

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


def craft_vla_loader(path: Path, args: argparse.Namespace) -> DataLoader:
    reader = open_reader(path)
    tokenizer = WordTokenizer.from_texts(sorted(setup.episode_instructions(reader)))
    stats = {reader.name: reader_statistics(reader, infer_dataset_kind(reader.name))}
    dataset = VLADataset([reader], tokenizer, SampleConfig(augment=True), statistics=stats)
    ids = np.random.default_rng(0).permutation(dataset.sample_ids)[: args.samples].tolist()
    batches = [ids[i : i + args.batch_size] for i in range(0, len(ids), args.batch_size)]
    collate = VLACollator(pad_token_id=tokenizer.pad_token_id)
    return DataLoader(dataset, batch_sampler=batches, collate_fn=collate, num_workers=args.workers)


def lerobot_loader(path: Path, args: argparse.Namespace) -> DataLoader | None:
    try:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset
    except ImportError:
        return None
    dataset = LeRobotDataset("local/tabletop", root=path)
    ids = np.random.default_rng(0).permutation(len(dataset))[: args.samples].tolist()
    batches = [ids[i : i + args.batch_size] for i in range(0, len(ids), args.batch_size)]
    return DataLoader(dataset, batch_sampler=batches, num_workers=args.workers)


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
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        rlds, lerobot = write_both(Path(tmp), args.episodes_per_task, args.image_size)
        num = min(args.samples, open_reader(lerobot).num_steps)
        loaders: dict[str, Callable[[], DataLoader]] = {
            "craft-vla lerobot": lambda: craft_vla_loader(lerobot, args),
            "craft-vla rlds": lambda: craft_vla_loader(rlds, args),
        }
        if lerobot_loader(lerobot, args) is not None:
            loaders["lerobot"] = lambda: lerobot_loader(lerobot, args)
        rates: dict[str, list[float]] = {name: [] for name in loaders}
        for _ in range(args.repeats):  # interleaved, so drifts of the machine hit every loader alike
            for name, make in loaders.items():
                rates[name].append(samples_per_second(make, num))
        result = {name: round(median(r), 1) for name, r in rates.items()}
        if "lerobot" in result:
            result["craft-vla lerobot / lerobot"] = round(result["craft-vla lerobot"] / result["lerobot"], 2)
        print(json.dumps({"samples": num, **vars(args), "samples_per_s": result}, indent=2))


if __name__ == "__main__":
    main()
