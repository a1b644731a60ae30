"""Write tests/fixtures/tf_image_reference.npz: what TensorFlow's image ops give on small frames.

The original (VLA-Adapter, OpenVLA-OFT's LIBERO utilities, dlimp's augmentation) preprocesses images with
TensorFlow; `craft_vla.data.image` and `craft_vla.eval.protocol` reproduce it without TensorFlow, and
tests/data/test_image_crop.py and tests/eval/test_libero_protocol.py compare against this file.
Runs in an environment with tensorflow (not the project's venv):

    /tmp/tfvenv/bin/python benchmarks/data/tf_image_reference.py --out tests/fixtures/tf_image_reference.npz

Frames: `real` (a 48 × 48 patch of the LIBERO fixture observation) and `noise` (32 × 40 uniform noise).
Per frame: `{name}/center_crop` (OpenVLA-OFT's `center_crop_image`: convert_image_dtype, crop_and_resize
of the centred 90 %-area box, clip, convert back with saturate=True), `{name}/jpeg` (`encode_jpeg` with
its defaults, then `decode_image`, as `resize_image_for_policy` does), `{name}/crop_box` and
`{name}/crop_float` (crop_and_resize of an off-centre box, float32 output). `unit_float` (values in
[0, 1]) with `unit_float_uint8`, their convert_image_dtype(uint8, saturate=True).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "libero_spatial_observation.npz"


def center_crop(image: np.ndarray, area: float = 0.9) -> np.ndarray:
    """OpenVLA-OFT's `center_crop_image` (its `crop_and_resize` with the crop size set to the input size)."""
    floats = tf.image.convert_image_dtype(tf.convert_to_tensor(image), tf.float32)[None]
    side = tf.reshape(tf.clip_by_value(tf.sqrt(area), 0, 1), (1,))
    margin = (1 - side) / 2
    boxes = tf.stack([margin, margin, margin + side, margin + side], axis=1)
    cropped = tf.image.crop_and_resize(floats, boxes, tf.range(1), image.shape[:2])[0]
    return tf.image.convert_image_dtype(tf.clip_by_value(cropped, 0, 1), tf.uint8, saturate=True).numpy()


def jpeg_roundtrip(image: np.ndarray) -> np.ndarray:
    return tf.io.decode_image(tf.image.encode_jpeg(image), expand_animations=False, dtype=tf.uint8).numpy()


def crop_float(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    floats = tf.image.convert_image_dtype(tf.convert_to_tensor(image), tf.float32)[None]
    return tf.image.crop_and_resize(floats, box[None], tf.range(1), image.shape[:2])[0].numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    frames = {
        "real": np.load(FIXTURE)["full_image"][88:136, 88:136].copy(),
        "noise": rng.integers(0, 256, (32, 40, 3), dtype=np.uint8),
    }
    out: dict[str, np.ndarray] = {}
    for name, frame in frames.items():
        box = np.array([0.031, 0.047, 0.031 + 0.9486833, 0.047 + 0.9486833], dtype=np.float32)
        out |= {
            f"{name}/frame": frame,
            f"{name}/center_crop": center_crop(frame),
            f"{name}/jpeg": jpeg_roundtrip(frame),
            f"{name}/crop_box": box,
            f"{name}/crop_float": crop_float(frame, box),
        }
    levels = (np.arange(256) / 255.5).astype(np.float32)  # the conversion's level boundaries, and just below
    unit = np.concatenate(
        [
            rng.random(2000).astype(np.float32),
            levels,
            np.nextafter(levels, np.float32(-1)),
            np.arange(256, dtype=np.float32) / 255,
            np.float32([0, 1]),
        ]
    )
    out["unit_float"] = unit
    out["unit_float_uint8"] = tf.image.convert_image_dtype(unit, tf.uint8, saturate=True).numpy()
    np.savez_compressed(args.out, tensorflow_version=np.array(tf.__version__), **out)
    print(f"wrote {args.out} (TensorFlow {tf.__version__})")


if __name__ == "__main__":
    main()
