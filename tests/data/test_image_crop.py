"""The centre crop and the augmentation's crop equal TensorFlow's, bit for bit.

Against an independent numpy float32 transcription of TF's `crop_and_resize` CPU kernel and of
`convert_image_dtype` (CI), against TensorFlow's outputs stored in tests/fixtures/tf_image_reference.npz
(CI; written by benchmarks/data/tf_image_reference.py), and against TensorFlow itself (marker `tf`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from craft_vla.data.image import (
    AugmentParams,
    ImageNormalization,
    augment_image,
    build_pixel_values,
    center_crop,
    center_crop_box,
    crop_and_resize,
    normalize_dual,
    sample_augment_params,
    to_uint8,
    to_unit_float,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
F32 = np.float32


def reference_to_float(image: np.ndarray) -> np.ndarray:
    """convert_image_dtype(uint8 -> float32): cast, then multiply by the float32 of 1/255."""
    return image.astype(F32) * F32(1.0 / 255)


def reference_to_uint8(image: np.ndarray) -> np.ndarray:
    """convert_image_dtype(float32 -> uint8, saturate=True): scale by 255.5, clip to [0, 255], truncate."""
    return np.trunc(np.clip(image * F32(255.5), 0, 255)).astype(np.uint8)


def reference_crop(image: np.ndarray, box) -> np.ndarray:
    """TF's crop_and_resize kernel, row by row in float32: (H, W, C) float32 -> (H, W, C)."""
    height, width = image.shape[:2]
    y1, x1, y2, x2 = (F32(v) for v in box)
    height_scale = (y2 - y1) * F32(height - 1) / F32(height - 1)
    width_scale = (x2 - x1) * F32(width - 1) / F32(width - 1)
    out = np.zeros_like(image)
    in_x = x1 * F32(width - 1) + np.arange(width, dtype=F32) * width_scale
    x_ok = (in_x >= 0) & (in_x <= width - 1)
    left, right = np.floor(in_x).astype(int).clip(0, width - 1), np.ceil(in_x).astype(int).clip(0, width - 1)
    x_lerp = (in_x - np.floor(in_x))[:, None]
    for y in range(height):
        in_y = y1 * F32(height - 1) + F32(y) * height_scale
        if in_y < 0 or in_y > height - 1:
            continue
        top, bottom = int(np.floor(in_y)), int(np.ceil(in_y))
        y_lerp = in_y - F32(top)
        top_row = image[top, left] + (image[top, right] - image[top, left]) * x_lerp
        bottom_row = image[bottom, left] + (image[bottom, right] - image[bottom, left]) * x_lerp
        out[y] = np.where(x_ok[:, None], top_row + (bottom_row - top_row) * y_lerp, F32(0))
    return out


def reference_center_crop(image: np.ndarray, area: float = 0.9) -> np.ndarray:
    """OpenVLA-OFT's center_crop_image; the box computed in float32 as TF does."""
    side = np.sqrt(F32(area))
    margin = (F32(1) - side) / F32(2)
    box = (margin, margin, margin + side, margin + side)
    return reference_to_uint8(np.clip(reference_crop(reference_to_float(image), box), 0, 1))


def reference_crop_f64(image: np.ndarray, box) -> np.ndarray:
    """The same sampling in float64 (crop size = image size, so the scale is the box side)."""
    height, width = image.shape[:2]
    ys = box[0] * (height - 1) + np.arange(height) * (box[2] - box[0])
    xs = box[1] * (width - 1) + np.arange(width) * (box[3] - box[1])
    t, b, yl = np.floor(ys).astype(int), np.ceil(ys).astype(int), (ys - np.floor(ys))[:, None, None]
    left, r, xl = np.floor(xs).astype(int), np.ceil(xs).astype(int), (xs - np.floor(xs))[None, :, None]
    top = image[t][:, left] * (1 - xl) + image[t][:, r] * xl
    bottom = image[b][:, left] * (1 - xl) + image[b][:, r] * xl
    return top * (1 - yl) + bottom * yl


def chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def hwc(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).numpy()


def random_images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [
        rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((224, 224, 3), (23, 17, 3), (64, 64, 3))
    ]


def fixture_frames() -> list[np.ndarray]:
    data = np.load(FIXTURES / "libero_spatial_observation.npz")
    return [data["full_image"], data["wrist_image"]]


def test_conversions_are_tfs_convert_image_dtype():
    levels = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(to_uint8(to_unit_float(levels)), levels)  # uint8 -> float -> uint8 is exact
    np.testing.assert_array_equal(to_unit_float(levels).numpy(), reference_to_float(levels.numpy()))
    # floor(x · 255.5), not round(x · 255): 0.5 -> 127 (not 128), 0.25 -> 63 (not 64), 0.002 -> 0 (not 1)
    values = torch.tensor([0.0, 0.002, 0.25, 0.5, 0.999, 1.0])
    assert to_uint8(values).tolist() == [0, 0, 63, 127, 255, 255]
    unit = torch.rand(10_000, generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(to_uint8(unit).numpy(), reference_to_uint8(unit.numpy()))


def test_center_crop_box_is_computed_in_float32():
    side = np.sqrt(F32(0.9))
    margin = (F32(1) - side) / F32(2)
    assert center_crop_box(0.9) == (margin, margin, margin + side, margin + side)
    assert center_crop_box(0.9) != pytest.approx(
        (0.0256583509747431, 0.0256583509747431, 0.974341649025257, 0.974341649025257), rel=0, abs=1e-12
    )  # not the float64 box


@pytest.mark.parametrize("index", range(3))
def test_center_crop_equals_the_float32_reference_on_random_images(index):
    image = random_images()[index]
    got = hwc(center_crop(chw(image), 0.9))
    np.testing.assert_array_equal(got, reference_center_crop(image))


def test_center_crop_equals_the_float32_reference_on_the_fixture_frames():
    for image in fixture_frames():
        np.testing.assert_array_equal(hwc(center_crop(chw(image), 0.9)), reference_center_crop(image))
    # both views at once, channel-first, as build_pixel_values crops them
    batch = torch.stack([chw(image) for image in fixture_frames()])
    for got, image in zip(center_crop(batch, 0.9), fixture_frames()):
        np.testing.assert_array_equal(hwc(got), reference_center_crop(image))


def test_a_float64_crop_would_differ_only_rarely_and_by_one_level():
    """Why the float32 arithmetic: in float64 a few values land on the other side of a level boundary."""
    image = random_images()[0]
    ours = hwc(center_crop(chw(image), 0.9)).astype(int)
    box = tuple(float(v) for v in center_crop_box(0.9))
    f64 = reference_crop_f64(image.astype(np.float64) / 255, box)
    wide = np.floor(np.clip(f64, 0, 1) * 255.5).clip(0, 255)
    assert np.abs(wide - ours).max() <= 1 and (wide != ours).mean() < 1e-3


def test_random_crop_boxes_sample_like_the_reference():
    image = reference_to_float(random_images()[1])
    boxes = [sample_augment_params(0, i, 0).crop_box for i in range(5)] + [
        (0.1, 0.2, 0.7, 0.95),
        (0.3, 0.0, 1.0, 0.6),
    ]
    for box in boxes:
        got = hwc(crop_and_resize(chw(image), box))
        np.testing.assert_array_equal(got, reference_crop(image, box))
    # a box reaching past the image samples TF's extrapolation value 0 there
    outside = hwc(crop_and_resize(chw(image), (0.5, 0.5, 1.5, 1.5)))
    np.testing.assert_array_equal(outside, reference_crop(image, (0.5, 0.5, 1.5, 1.5)))
    assert (outside[-1] == 0).all() and (outside[0, 0] != 0).any()


def test_the_augmentation_branch_quantises_like_tf():
    image = random_images()[2]
    params = sample_augment_params(3, 11, 1)
    norm = ImageNormalization()
    expected_uint8 = reference_to_uint8(hwc(augment_image(chw(reference_to_float(image)), params)))
    expected = normalize_dual(chw(expected_uint8).float() / 255, norm)
    assert torch.equal(build_pixel_values([image], 64, norm, augment=params), expected)
    # with neutral colour ops the augmentation's crop is the reference crop (up to the colour ops' rounding)
    neutral = AugmentParams(params.crop_box, 0.0, 1.0, 1.0, 0.0)
    cropped = hwc(to_uint8(augment_image(to_unit_float(chw(image)), neutral))).astype(int)
    reference = reference_to_uint8(np.clip(reference_crop(reference_to_float(image), params.crop_box), 0, 1))
    assert np.abs(cropped - reference).max() <= 1 and (cropped != reference).mean() < 0.01


def test_the_center_cropped_pixel_values_are_the_quantised_crop_over_255():
    image = fixture_frames()[0]
    norm = ImageNormalization()
    got = build_pixel_values([image], 224, norm, center_crop_area=0.9)
    expected = normalize_dual(chw(reference_center_crop(image)).float() / 255, norm)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("name", ["real", "noise"])
def test_crops_equal_tensorflows_stored_outputs(name):
    ref = np.load(FIXTURES / "tf_image_reference.npz")
    frame = ref[f"{name}/frame"]
    np.testing.assert_array_equal(hwc(center_crop(chw(frame), 0.9)), ref[f"{name}/center_crop"])
    crop = hwc(crop_and_resize(to_unit_float(chw(frame)), tuple(ref[f"{name}/crop_box"].tolist())))
    np.testing.assert_array_equal(crop, ref[f"{name}/crop_float"])


def test_conversion_equals_tensorflows_stored_outputs():
    ref = np.load(FIXTURES / "tf_image_reference.npz")
    np.testing.assert_array_equal(
        to_uint8(torch.from_numpy(ref["unit_float"])).numpy(), ref["unit_float_uint8"]
    )


@pytest.mark.tf
def test_crop_and_conversion_equal_tensorflow():
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(1)
    images = fixture_frames() + random_images() + [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)]
    for image in images:
        floats = tf.image.convert_image_dtype(image, tf.float32)
        np.testing.assert_array_equal(hwc(to_unit_float(chw(image))), floats.numpy())
        side = tf.reshape(tf.clip_by_value(tf.sqrt(0.9), 0, 1), (1,))  # OpenVLA-OFT's crop_and_resize
        margin = (1 - side) / 2
        boxes = tf.stack([margin, margin, margin + side, margin + side], axis=1)
        np.testing.assert_array_equal(np.float32(center_crop_box(0.9)), boxes.numpy()[0])
        cropped = tf.image.crop_and_resize(floats[None], boxes, tf.range(1), image.shape[:2])[0]
        expected = tf.image.convert_image_dtype(tf.clip_by_value(cropped, 0, 1), tf.uint8, saturate=True)
        np.testing.assert_array_equal(hwc(center_crop(chw(image), 0.9)), expected.numpy())
        for i in range(3):
            box = sample_augment_params(0, i, 0).crop_box
            tf_crop = tf.image.crop_and_resize(floats[None], np.float32([box]), tf.range(1), image.shape[:2])[
                0
            ]
            np.testing.assert_array_equal(
                hwc(crop_and_resize(to_unit_float(chw(image)), box)), tf_crop.numpy()
            )
    unit = rng.random(100_000).astype(np.float32)
    expected = tf.image.convert_image_dtype(unit, tf.uint8, saturate=True).numpy()
    np.testing.assert_array_equal(to_uint8(torch.from_numpy(unit)).numpy(), expected)
