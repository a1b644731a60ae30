"""`craft-vla data inspect PATH`: summarise an RLDS or LeRobot v3 dataset and save a grid of sample images."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from craft_vla.data.formats import Reader, open_reader, reader_statistics
from craft_vla.data.transforms import get_dataset_kind, infer_dataset_kind


def _format_vector(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{v: .4f}" for v in values) + "]"


def image_grid(reader: Reader, num_samples: int = 8, tile: int = 128) -> Image.Image:
    """A grid of `num_samples` steps spread over the dataset (rows) x its cameras (columns)."""
    cameras = [k.split("/", 1)[1] for k, s in reader.features.items() if s.kind == "image" and s.in_sequence]
    if not cameras:
        raise ValueError(f"{reader.data_dir}: the dataset has no image features to show")
    positions = np.linspace(0, reader.num_steps - 1, num=min(num_samples, reader.num_steps)).astype(np.int64)
    starts = np.cumsum(reader.episode_lengths) - reader.episode_lengths
    grid = Image.new("RGB", (tile * len(cameras), tile * len(positions)))
    for row, position in enumerate(positions):
        episode = int(np.searchsorted(starts, position, side="right") - 1)
        step = int(position - starts[episode])
        for col, camera in enumerate(cameras):
            image = reader.step_image(episode, step, camera)
            tile_image = Image.fromarray(image if image.shape[-1] == 3 else image[..., 0]).convert("RGB")
            grid.paste(tile_image.resize((tile, tile), Image.BILINEAR), (col * tile, row * tile))
    return grid


def inspect(
    path: str | Path,
    out_png: str | Path | None = None,
    *,
    split: str = "train",
    num_images: int = 8,
    max_episodes: int = 20,
    kind: str | None = None,
    index_dir: str | Path | None = None,
    dataset_format: str = "auto",
    lerobot_features: str | None = None,
) -> dict[str, Any]:
    """Print episodes, total steps, instructions and statistics of the dataset at `path`; write a PNG grid.

    Returns the summary as a dict (episodes, steps, instructions, statistics as JSON).
    """
    reader = open_reader(
        path, split, dataset_format=dataset_format, lerobot_features=lerobot_features, index_dir=index_dir
    )
    dataset_kind = get_dataset_kind(kind) if kind else infer_dataset_kind(reader.name)
    lengths = reader.episode_lengths
    instructions: Counter[str] = Counter()
    episode_instructions = []
    for episode in range(reader.num_episodes):
        texts = reader.step_fields(episode).get(dataset_kind.instruction_feature, [""])
        episode_instructions.append(texts[0] if len(texts) else "")
        instructions[episode_instructions[-1]] += 1
    print(f"{reader.name} {reader.version} ({split}) at {reader.data_dir}")
    if hasattr(reader, "feature_map"):
        print(f"LeRobot at {reader.fps:g} fps; inputs: {reader.feature_map}")
    print(
        f"episodes: {reader.num_episodes}  total steps: {reader.num_steps}  "
        f"steps per episode: min {lengths.min()} mean {lengths.mean():.1f} max {lengths.max()}"
    )
    print("features:")
    for spec in reader.features.values():
        print(
            f"  {spec.key}: {spec.kind} {spec.dtype} {spec.shape}"
            + (f" {spec.encoding_format}" if spec.encoding_format else "")
        )
    print(f"episodes (first {min(max_episodes, reader.num_episodes)}):")
    for episode in range(min(max_episodes, reader.num_episodes)):
        print(f"  {episode:5d}  {lengths[episode]:5d} steps  {episode_instructions[episode]}")
    print(f"instructions ({len(instructions)} distinct):")
    for text, count in instructions.most_common():
        print(f"  {count:5d} x {text}")
    stats = reader_statistics(reader, dataset_kind)
    print(f"statistics ({dataset_kind.name} transform, {stats.num_transitions} transitions):")
    for name, entry in (("action", stats.action), ("proprio", stats.proprio)):
        if entry is None:
            continue
        for field in ("q01", "q99", "mean", "std", "min", "max"):
            print(f"  {name:7s} {field:4s} {_format_vector(getattr(entry, field))}")
        print(f"  {name:7s} mask {entry.mask.astype(int).tolist()}")
    if out_png is not None:
        image_grid(reader, num_images).save(out_png)
        print(f"wrote {out_png}")
    return {
        "name": reader.name,
        "episodes": reader.num_episodes,
        "steps": reader.num_steps,
        "instructions": dict(instructions),
        "statistics": stats.to_json(),
    }


@dataclass
class InspectConfig:
    """`craft-vla data inspect PATH`: episodes, steps, instructions and normalisation statistics of an RLDS or
    LeRobot v3 dataset, and a PNG grid of sample images. Kinds: libero, identity (default: from the name)."""

    path: Path = Path(".")  # dataset directory: RLDS <root>/<name>[/<version>], or a LeRobot root
    out: Path | None = None  # PNG grid of sample images (default: none)
    split: str = "train"
    num_images: int = 8
    kind: str | None = None  # dataset kind: libero | identity; default from the name
    dataset_format: str = "auto"  # rlds | lerobot | auto (by the layout)
    lerobot_features: str = ""  # LeRobot keys: image=KEY,wrist_image=KEY,state=KEY,action=KEY; else LIBERO's


def inspect_command(cfg: InspectConfig) -> int:
    inspect(
        cfg.path,
        cfg.out,
        split=cfg.split,
        num_images=cfg.num_images,
        kind=cfg.kind,
        dataset_format=cfg.dataset_format,
        lerobot_features=cfg.lerobot_features or None,
    )
    return 0
