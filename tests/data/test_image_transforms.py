import colorsys
import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from craft_vla.data.image import (
    AugmentParams,
    ImageNormalization,
    adjust_saturation_hsv,
    augment_image,
    build_pixel_values,
    center_crop_box,
    crop_and_resize,
    sample_augment_params,
)

IDENTITY_BOX = (0.0, 0.0, 1.0, 1.0)


def colorsys_apply(image: torch.Tensor, fn) -> torch.Tensor:
    pixels = image.permute(1, 2, 0).reshape(-1, 3).double().numpy()
    out = [colorsys.hsv_to_rgb(*fn(*colorsys.rgb_to_hsv(*p))) for p in pixels]
    out = torch.tensor(np.array(out), dtype=torch.float32)
    return out.reshape(image.shape[1], image.shape[2], 3).permute(2, 0, 1)


def test_six_channel_normalisation_layout():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(2)]
    norm = ImageNormalization()
    pixels = build_pixel_values(images, 8, norm)
    assert pixels.shape == (12, 8, 8) and pixels.dtype == torch.float32
    for i, image in enumerate(images):
        x = image.astype(np.float64).transpose(2, 0, 1) / 255
        dino = (x - np.array(norm.dino_mean)[:, None, None]) / np.array(norm.dino_std)[:, None, None]
        siglip = (x - 0.5) / 0.5
        np.testing.assert_allclose(pixels[6 * i : 6 * i + 3], dino, atol=1e-5)
        np.testing.assert_allclose(pixels[6 * i + 3 : 6 * i + 6], siglip, atol=1e-5)


def test_resize_is_pil_bicubic():
    image = np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    pixels = build_pixel_values([image], 12, ImageNormalization((0, 0, 0), (1, 1, 1), (0, 0, 0), (1, 1, 1)))
    expected = np.asarray(Image.fromarray(image).resize((12, 12), Image.BICUBIC)).transpose(2, 0, 1) / 255
    np.testing.assert_allclose(pixels[:3], expected, atol=1e-6)


def test_constants_from_processor_config(tmp_path):
    config = {
        "tvf_normalize_params": [
            {"mean": [0.484375, 0.455078125, 0.40625], "std": [0.228515625, 0.2236328125, 0.224609375]},
            {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
        ]
    }
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    norm = ImageNormalization.from_processor_config(tmp_path)
    assert norm.dino_mean == (0.484375, 0.455078125, 0.40625) and norm.siglip_std == (0.5, 0.5, 0.5)


# VLA-Adapter's released preprocessor_config.json, `tvf_normalize_params` (DINOv2 first, then SigLIP)
RELEASE_CONSTANTS = {
    "dino_mean": (0.484375, 0.455078125, 0.40625),
    "dino_std": (0.228515625, 0.2236328125, 0.224609375),
    "siglip_mean": (0.5, 0.5, 0.5),
    "siglip_std": (0.5, 0.5, 0.5),
}


def test_default_constants_are_the_releases_bf16_rounded_ones():
    imagenet_and_siglip = {
        "dino_mean": (0.485, 0.456, 0.406),
        "dino_std": (0.229, 0.224, 0.225),
        "siglip_mean": (0.5, 0.5, 0.5),
        "siglip_std": (0.5, 0.5, 0.5),
    }
    norm = ImageNormalization()
    for name, values in imagenet_and_siglip.items():
        bf16 = torch.tensor(values, dtype=torch.float64).bfloat16()
        assert getattr(norm, name) == tuple(bf16.tolist()), name
    assert dataclasses.asdict(norm) == RELEASE_CONSTANTS


def test_the_first_directory_with_a_processor_gives_the_constants(tmp_path):
    other = {
        "dino_mean": (0.25, 0.5, 0.75),
        "dino_std": (0.125, 0.25, 0.375),
        "siglip_mean": (0.5, 0.25, 0.5),
        "siglip_std": (0.75, 0.5, 0.25),
    }
    first, second, empty = tmp_path / "first", tmp_path / "second", tmp_path / "empty"
    for directory, constants in ((first, other), (second, RELEASE_CONSTANTS), (empty, None)):
        directory.mkdir()
        if constants:
            params = [
                {"mean": list(constants[f"{tower}_mean"]), "std": list(constants[f"{tower}_std"])}
                for tower in ("dino", "siglip")
            ]
            (directory / "preprocessor_config.json").write_text(json.dumps({"tvf_normalize_params": params}))
    assert dataclasses.asdict(ImageNormalization.from_directories("", empty, first, second)) == other
    assert dataclasses.asdict(ImageNormalization.from_directories(second, first)) == RELEASE_CONSTANTS
    assert ImageNormalization.from_directories("", empty, tmp_path / "missing") == ImageNormalization()
    (empty / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3}))
    with pytest.raises(ValueError, match="tvf_normalize_params"):
        ImageNormalization.from_directories(empty, first)


def test_augmentation_is_deterministic_per_sample_and_epoch():
    a, b = sample_augment_params(0, 77, 1), sample_augment_params(0, 77, 1)
    assert a == b
    assert sample_augment_params(0, 77, 2) != a and sample_augment_params(0, 78, 1) != a
    assert sample_augment_params(1, 77, 1) != a
    top, left, bottom, right = a.crop_box
    assert (bottom - top) * (right - left) == pytest.approx(0.9)
    assert (bottom - top) == pytest.approx(right - left)
    assert 0 <= top and bottom <= 1 and 0 <= left and right <= 1
    assert abs(a.brightness_delta) <= 0.2 and 0.8 <= a.contrast_factor <= 1.2 and abs(a.hue_delta) <= 0.05


def test_crop_and_resize_samples_like_tf():
    image = torch.arange(25, dtype=torch.float32).reshape(1, 5, 5)
    torch.testing.assert_close(crop_and_resize(image, IDENTITY_BOX), image)
    # box rows/cols [0.25, 0.75] of a 5-pixel axis sample pixel coordinates 1, 1.5, 2, 2.5, 3
    coords = torch.tensor([1.0, 1.5, 2.0, 2.5, 3.0])
    cropped = crop_and_resize(image, (0.25, 0.25, 0.75, 0.75))[0]
    torch.testing.assert_close(cropped, coords[:, None] * 5 + coords[None])
    box = center_crop_box(0.81)
    assert box == pytest.approx((0.05, 0.05, 0.95, 0.95))


def test_colour_ops_follow_tf_semantics():
    image = torch.rand(3, 6, 6, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1
    plain = AugmentParams(IDENTITY_BOX, 0.0, 1.0, 1.0, 0.0)
    torch.testing.assert_close(augment_image(image, plain), image, atol=1e-5, rtol=0)
    bright = augment_image(image, AugmentParams(IDENTITY_BOX, 0.15, 1.0, 1.0, 0.0))
    torch.testing.assert_close(bright, (image + 0.15).clamp(0, 1), atol=1e-5, rtol=0)
    contrast = augment_image(image, AugmentParams(IDENTITY_BOX, 0.0, 1.2, 1.0, 0.0))
    mean = image.mean(dim=(1, 2), keepdim=True)
    torch.testing.assert_close(contrast, ((image - mean) * 1.2 + mean).clamp(0, 1), atol=1e-5, rtol=0)
    saturated = adjust_saturation_hsv(image, 1.15)
    expected = colorsys_apply(image, lambda h, s, v: (h, min(s * 1.15, 1.0), v))
    torch.testing.assert_close(saturated, expected, atol=1e-5, rtol=0)
    hued = augment_image(image, AugmentParams(IDENTITY_BOX, 0.0, 1.0, 1.0, 0.04))
    expected = colorsys_apply(image, lambda h, s, v: ((h + 0.04) % 1.0, s, v))
    torch.testing.assert_close(hued, expected, atol=1e-4, rtol=0)


def test_augmented_and_center_cropped_pixels_differ_from_plain():
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    plain = build_pixel_values([image], 16)
    augmented = build_pixel_values([image], 16, augment=sample_augment_params(0, 1, 0))
    cropped = build_pixel_values([image], 16, center_crop_area=0.9)
    assert augmented.shape == plain.shape == cropped.shape
    assert not torch.allclose(augmented, plain) and not torch.allclose(cropped, plain)
    again = build_pixel_values([image], 16, augment=sample_augment_params(0, 1, 0))
    torch.testing.assert_close(again, augmented)
