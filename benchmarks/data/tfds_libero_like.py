"""Build LIBERO-like RLDS datasets with TensorFlow Datasets itself, and dump what TFDS decodes.

Runs in an environment with tensorflow + tensorflow-datasets (not the project's venv), e.g.

    python3 -m venv /work/tfvenv
    /work/tfvenv/bin/pip install tensorflow-cpu tensorflow-datasets google-crc32c pillow
    /work/tfvenv/bin/python benchmarks/data/tfds_libero_like.py build --out /tmp/tfds_data --episodes 4
    /work/tfvenv/bin/python benchmarks/data/tfds_libero_like.py dump \
        --data-dir /tmp/tfds_data/libero_like_no_noops/1.0.0 --out /tmp/libero_like.npz

`build` writes two datasets through `tfds.core.GeneratorBasedBuilder` (the path the LIBERO RLDS
conversions took): `libero_like_no_noops` (the LIBERO features: two 256 px JPEG cameras, state 8,
joint_state 7, action 7, reward, discount, is_first/is_last/is_terminal, language_instruction,
episode_metadata/file_path) and `tfds_dtype_mix` (PNG images, float64, int32, uint8 and bool
tensors, a tensor in the episode metadata). `dump` decodes a dataset with
`tfds.builder_from_directory(...).as_dataset(shuffle_files=False)` and saves every field of every
step as `e{episode}/{flat key}` arrays (text as bytes) in an .npz for the tf-marked test.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

TASKS = [
    "pick up the black bowl between the plate and the ramekin and place it on the plate",
    "open the top drawer and put the bowl inside",
    "put both the alphabet soup and the tomato sauce in the basket",
    "turn on the stove and put the moka pot on it",
]


def synthetic_frames(rng: np.random.Generator, num_steps: int, size: int) -> np.ndarray:
    """Camera-like frames (T, size, size, 3): a shaded table and a few moving coloured blocks."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    table = np.stack([150 + 60 * y, 120 + 40 * y, 90 + 30 * x], axis=-1)
    blocks = [
        (
            rng.uniform(0.1, 0.8, 2),
            rng.uniform(-0.004, 0.004, 2),
            rng.uniform(0.05, 0.15),
            rng.integers(0, 256, 3),
        )
        for _ in range(4)
    ]
    frames = np.empty((num_steps, size, size, 3), dtype=np.uint8)
    for t in range(num_steps):
        frame = table.copy()
        for corner, velocity, side, colour in blocks:
            top, left = np.clip(corner + velocity * t, 0, 1 - side)
            inside = (y >= top) & (y < top + side) & (x >= left) & (x < left + side)
            frame[inside] = colour
        frames[t] = np.clip(frame + rng.normal(0, 3, frame.shape), 0, 255)
    return frames


def libero_like_episode(rng: np.random.Generator, index: int, image_size: int) -> dict:
    num_steps = int(rng.integers(60, 140))
    last = np.arange(num_steps) == num_steps - 1
    action = rng.uniform(-1, 1, (num_steps, 7)).astype(np.float32)
    action[:, -1] = np.sign(action[:, -1])
    frames = synthetic_frames(rng, num_steps, image_size)
    steps = [
        {
            "observation": {
                "image": frames[t],
                "wrist_image": frames[t, ::-1, ::-1],
                "state": rng.normal(size=8).astype(np.float32),
                "joint_state": rng.normal(size=7).astype(np.float32),
            },
            "action": action[t],
            "discount": 1.0,
            "reward": float(last[t]),
            "is_first": t == 0,
            "is_last": bool(last[t]),
            "is_terminal": bool(last[t]),
            "language_instruction": TASKS[index % len(TASKS)],
        }
        for t in range(num_steps)
    ]
    return {"steps": steps, "episode_metadata": {"file_path": f"/data/libero/demo_{index}.hdf5"}}


class LiberoLikeNoNoops(tfds.core.GeneratorBasedBuilder):
    """LIBERO's RLDS features, synthetic content."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Synthetic LIBERO-like data."}
    NUM_EPISODES = 4
    IMAGE_SIZE = 256

    def _info(self) -> tfds.core.DatasetInfo:
        image = lambda doc: tfds.features.Image(  # noqa: E731
            shape=(self.IMAGE_SIZE, self.IMAGE_SIZE, 3), dtype=np.uint8, encoding_format="jpeg", doc=doc
        )
        scalar = lambda dtype, doc: tfds.features.Scalar(dtype=dtype, doc=doc)  # noqa: E731
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "steps": tfds.features.Dataset(
                        {
                            "observation": tfds.features.FeaturesDict(
                                {
                                    "image": image("Main camera RGB observation."),
                                    "wrist_image": image("Wrist camera RGB observation."),
                                    "state": tfds.features.Tensor(
                                        shape=(8,), dtype=np.float32, doc="EEF pose and gripper."
                                    ),
                                    "joint_state": tfds.features.Tensor(
                                        shape=(7,), dtype=np.float32, doc="Joint angles."
                                    ),
                                }
                            ),
                            "action": tfds.features.Tensor(
                                shape=(7,), dtype=np.float32, doc="Delta EEF pose and gripper."
                            ),
                            "discount": scalar(np.float32, "Discount."),
                            "reward": scalar(np.float32, "Reward."),
                            "is_first": scalar(np.bool_, "First step."),
                            "is_last": scalar(np.bool_, "Last step."),
                            "is_terminal": scalar(np.bool_, "Terminal step."),
                            "language_instruction": tfds.features.Text(doc="Language instruction."),
                        }
                    ),
                    "episode_metadata": tfds.features.FeaturesDict(
                        {"file_path": tfds.features.Text(doc="Source file.")}
                    ),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        rng = np.random.default_rng(0)
        for index in range(self.NUM_EPISODES):
            yield f"episode_{index}", libero_like_episode(rng, index, self.IMAGE_SIZE)


class TfdsDtypeMix(tfds.core.GeneratorBasedBuilder):
    """Feature types LIBERO does not use: PNG, float64, int32, uint8 and bool tensors, metadata tensor."""

    VERSION = tfds.core.Version("0.2.0")
    RELEASE_NOTES = {"0.2.0": "Synthetic."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "steps": tfds.features.Dataset(
                        {
                            "observation": {
                                "image": tfds.features.Image(shape=(24, 24, 3), encoding_format="png"),
                                "depth": tfds.features.Tensor(shape=(2, 3), dtype=np.uint8),
                                "pose": tfds.features.Tensor(shape=(4,), dtype=np.float64),
                            },
                            "action": tfds.features.Tensor(shape=(3,), dtype=np.float32),
                            "counter": tfds.features.Scalar(dtype=np.int32),
                            "flags": tfds.features.Tensor(shape=(2,), dtype=np.bool_),
                            "language_instruction": tfds.features.Text(),
                        }
                    ),
                    "episode_metadata": {
                        "file_path": tfds.features.Text(),
                        "seed": tfds.features.Tensor(shape=(2,), dtype=np.int64),
                    },
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        rng = np.random.default_rng(1)
        for index in range(3):
            num_steps = int(rng.integers(2, 6))
            yield (
                index,
                {
                    "steps": [
                        {
                            "observation": {
                                "image": rng.integers(0, 256, (24, 24, 3), dtype=np.uint8),
                                "depth": rng.integers(0, 256, (2, 3), dtype=np.uint8),
                                "pose": rng.normal(size=4),
                            },
                            "action": rng.normal(size=3).astype(np.float32),
                            "counter": t * 1000 - 7,
                            "flags": rng.random(2) < 0.5,
                            "language_instruction": f"step {t} of episode {index} ünïcode",
                        }
                        for t in range(num_steps)
                    ],
                    "episode_metadata": {"file_path": f"file_{index}", "seed": np.array([index, -index])},
                },
            )


def build(out: str, episodes: int, image_size: int) -> None:
    LiberoLikeNoNoops.NUM_EPISODES, LiberoLikeNoNoops.IMAGE_SIZE = episodes, image_size
    config = tfds.download.DownloadConfig(compute_stats=tfds.download.ComputeStatsMode.SKIP)
    for builder_class in (LiberoLikeNoNoops, TfdsDtypeMix):
        builder = builder_class(data_dir=out)
        builder.download_and_prepare(download_config=config)
        print(builder.data_dir)


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else key
        out.update(flatten(value, name) if isinstance(value, dict) else {name: value})
    return out


def dump(data_dir: str, out: str) -> None:
    builder = tfds.builder_from_directory(data_dir)
    arrays = {}
    for e, episode in enumerate(tfds.as_numpy(builder.as_dataset(split="train", shuffle_files=False))):
        steps = [flatten(step) for step in episode.pop("steps")]
        for key in steps[0]:
            arrays[f"e{e}/steps/{key}"] = np.stack([np.asarray(step[key]) for step in steps])
        for key, value in flatten(episode).items():
            arrays[f"e{e}/{key}"] = np.asarray(value)
    np.savez(out, **arrays)
    print(f"{out}: {e + 1} episodes")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build_cmd = commands.add_parser("build")
    build_cmd.add_argument("--out", required=True)
    build_cmd.add_argument("--episodes", type=int, default=4)
    build_cmd.add_argument("--image-size", type=int, default=256)
    dump_cmd = commands.add_parser("dump")
    dump_cmd.add_argument("--data-dir", required=True)
    dump_cmd.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.command == "build":
        build(args.out, args.episodes, args.image_size)
    else:
        dump(args.data_dir, args.out)
