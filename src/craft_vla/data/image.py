"""Image preprocessing for VLA-Adapter: resize, augmentation, 6-channel DINOv2/SigLIP normalisation.

Per image: resize to the model's size (PIL bicubic, antialiased, as prismatic's "resize-naive"),
then optionally the training augmentation of VLA-Adapter's RLDS pipeline (random crop of 90 %
area with aspect 1 resized back, brightness +-0.2 additive, contrast and saturation x[0.8, 1.2],
hue +-0.05, each clipped to [0, 1]; TF semantics: contrast about the per-channel mean, saturation
scaled in HSV) or the inference centre crop of the same area, then normalisation twice: DINOv2's
mean/std and SigLIP's 0.5/0.5 -> (6, H, W). Several images are concatenated on the channel axis
-> (6·I, H, W). Augmentation parameters are drawn from (seed, sample_id, epoch), so a run is
reproducible whatever the worker that decodes a sample.

Crop and augmentation reproduce the original's TensorFlow arithmetic bit for bit: uint8 -> float32
and back as `tf.image.convert_image_dtype` does, and `tf.image.crop_and_resize`'s float32 sampling
(docs/eval_libero.md, "Preprocessing: what matches the original", has the measurements).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

Triple = tuple[float, float, float]
_RESAMPLE = {"bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS, "bilinear": Image.BILINEAR}


@dataclass(frozen=True)
class ImageNormalization:
    """Mean/std of the two vision towers (DINOv2 first, SigLIP second).

    The defaults are the constants VLA-Adapter's released processor applies (its preprocessor_config.json
    `tvf_normalize_params`): ImageNet's (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225) rounded to bfloat16,
    and SigLIP's 0.5 / 0.5. The checkpoints were trained with these, not with the float ImageNet values.
    """

    dino_mean: Triple = (0.484375, 0.455078125, 0.40625)
    dino_std: Triple = (0.228515625, 0.2236328125, 0.224609375)
    siglip_mean: Triple = (0.5, 0.5, 0.5)
    siglip_std: Triple = (0.5, 0.5, 0.5)

    @classmethod
    def from_directories(cls, *directories: str | Path) -> ImageNormalization:
        """The constants of the first directory holding a preprocessor_config.json (empty names skipped);
        the defaults (the release's constants) when none does."""
        for directory in directories:
            if directory and (Path(directory) / "preprocessor_config.json").is_file():
                return cls.from_processor_config(directory)
        return cls()

    @classmethod
    def from_processor_config(cls, path: str | Path) -> ImageNormalization:
        """The constants of a released checkpoint's preprocessor_config.json (a file or its directory).

        Uses `tvf_normalize_params` (the constants the processor applies, bf16-rounded in the
        VLA-Adapter release) and falls back to `means`/`stds`.
        """
        path = Path(path)
        if path.is_dir():
            path = path / "preprocessor_config.json"
        config = json.loads(path.read_text())
        if "tvf_normalize_params" in config:
            params = config["tvf_normalize_params"]
            means, stds = [p["mean"] for p in params], [p["std"] for p in params]
        elif "means" in config and "stds" in config:
            means, stds = config["means"], config["stds"]
        else:
            raise ValueError(
                f"{path}: expected 'tvf_normalize_params' or 'means'/'stds', found keys {sorted(config)}"
            )
        if len(means) != 2:
            raise ValueError(
                f"{path}: expected constants for 2 vision towers (DINOv2, SigLIP), found {len(means)}"
            )
        return cls(tuple(means[0]), tuple(stds[0]), tuple(means[1]), tuple(stds[1]))


@dataclass(frozen=True)
class AugmentConfig:
    """VLA-Adapter's training augmentation (spec section 6)."""

    crop_area: float = 0.9
    crop_aspect: float = 1.0
    brightness: float = 0.2
    contrast: tuple[float, float] = (0.8, 1.2)
    saturation: tuple[float, float] = (0.8, 1.2)
    hue: float = 0.05


@dataclass(frozen=True)
class AugmentParams:
    """One draw of the augmentation; `crop_box` is (top, left, bottom, right) in [0, 1] image units."""

    crop_box: tuple[float, float, float, float]
    brightness_delta: float
    contrast_factor: float
    saturation_factor: float
    hue_delta: float


def sample_augment_params(
    seed: int, sample_id: int, epoch: int, config: AugmentConfig = AugmentConfig()
) -> AugmentParams:
    """Deterministic augmentation parameters for one sample in one epoch (shared by its images).

    The crop box is computed in float32, as dlimp's `random_resized_crop` computes it in TensorFlow.
    """
    rng = np.random.default_rng([int(seed), int(sample_id), int(epoch)])
    area, aspect = np.float32(config.crop_area), np.float32(config.crop_aspect)
    height, width = min(np.float32(1), np.sqrt(area / aspect)), min(np.float32(1), np.sqrt(area * aspect))
    top = np.float32(rng.uniform(0, float(1 - height)))
    left = np.float32(rng.uniform(0, float(1 - width)))
    return AugmentParams(
        crop_box=(float(top), float(left), float(top + height), float(left + width)),
        brightness_delta=rng.uniform(-config.brightness, config.brightness),
        contrast_factor=rng.uniform(*config.contrast),
        saturation_factor=rng.uniform(*config.saturation),
        hue_delta=rng.uniform(-config.hue, config.hue),
    )


def center_crop_box(area: float = 0.9) -> tuple[float, float, float, float]:
    """The centred square box keeping `area` of the image, (top, left, bottom, right) in [0, 1].

    Computed in float32 like OpenVLA-OFT's `crop_and_resize` (side sqrt(area), margin (1 - side) / 2).
    """
    side = min(np.float32(1), np.sqrt(np.float32(area)))
    margin = (np.float32(1) - side) / np.float32(2)
    return (float(margin), float(margin), float(margin + side), float(margin + side))


def resize_image(image: np.ndarray, size: int, method: str = "bicubic") -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (size, size, 3) with PIL (antialiased); unchanged if already that size.

    "bicubic" is prismatic's resize-naive; "lanczos" approximates the TF lanczos3 resize of
    VLA-Adapter's RLDS pipeline and LIBERO evaluation utilities.
    """
    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), _RESAMPLE[method]))


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [0, 1] as `tf.image.convert_image_dtype` does: times float32(1/255), not / 255."""
    return images.to(torch.float32) * torch.tensor(1 / 255, dtype=torch.float32)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float32 in [0, 1] -> uint8 as `tf.image.convert_image_dtype(..., tf.uint8, saturate=True)` does.

    TF scales by 255.5 (not 255) and truncates: floor(x · 255.5) clipped to [0, 255], so level k
    covers [k / 255.5, (k + 1) / 255.5), not round(x · 255).
    """
    return (images.to(torch.float32) * 255.5).clamp_(0, 255).floor_().to(torch.uint8)


def _axis_samples(low: torch.Tensor, high: torch.Tensor, size: int) -> tuple[torch.Tensor, ...]:
    """Source rows (or columns) of one crop axis as TF's CPU kernel computes them, every step in float32.

    -> (floor index, ceil index, interpolation weight, inside the image), each (size,).
    """
    scale = (high - low) * (size - 1) / max(size - 1, 1)  # a 1-pixel axis samples position 0, as TF's does
    position = low * (size - 1) + torch.arange(size, dtype=torch.float32) * scale
    inside = (position >= 0) & (position <= size - 1)
    first, last = position.floor(), position.ceil()
    return first.clamp(0, size - 1).long(), last.clamp(0, size - 1).long(), position - first, inside


def crop_and_resize(image: torch.Tensor, box: Sequence[float]) -> torch.Tensor:
    """Bilinear crop of `box` (top, left, bottom, right in [0, 1]) resized back to the input size.

    image (..., H, W) float32 -> same shape, bit-identical to TF's `tf.image.crop_and_resize` on CPU: the box
    in float32, sample i of an axis of n pixels at `low·(n−1) + i·((high − low)·(n−1)/(n−1))`, interpolated
    from its 4 neighbours along x, then y, each operation rounded to float32 in the kernel's order; a sample
    outside the image gives 0 (TF's extrapolation value).
    """
    height, width = image.shape[-2:]
    top, left, bottom, right = torch.tensor(box, dtype=torch.float32)
    upper, lower, y_weight, y_inside = _axis_samples(top, bottom, height)
    first, last, x_weight, x_inside = _axis_samples(left, right, width)
    upper_rows, lower_rows = image[..., upper, :], image[..., lower, :]
    top_left, top_right = upper_rows[..., first], upper_rows[..., last]
    bottom_left, bottom_right = lower_rows[..., first], lower_rows[..., last]
    top_row = top_left + (top_right - top_left) * x_weight
    bottom_row = bottom_left + (bottom_right - bottom_left) * x_weight
    out = top_row + (bottom_row - top_row) * y_weight[:, None]
    return torch.where(y_inside[:, None] & x_inside, out, torch.zeros((), dtype=out.dtype))


def center_crop(images: torch.Tensor, area: float) -> torch.Tensor:
    """uint8 (..., H, W) -> uint8: the evaluation's centre crop, OpenVLA-OFT's `center_crop_image`.

    convert_image_dtype to float32, crop_and_resize of `center_crop_box(area)`, clip to [0, 1], convert back.
    """
    return to_uint8(crop_and_resize(to_unit_float(images), center_crop_box(area)).clamp_(0, 1))


def _rgb_to_hsv(image: torch.Tensor) -> torch.Tensor:
    r, g, b = image.unbind(0)
    value, _ = image.max(0)
    chroma = value - image.min(0).values
    saturation = torch.where(value > 0, chroma / value.clamp_min(1e-12), torch.zeros_like(value))
    safe = chroma.clamp_min(1e-12)
    hue = torch.where(value == g, (b - r) / safe + 2, (r - g) / safe + 4)
    hue = torch.where(value == r, ((g - b) / safe) % 6, hue)
    hue = torch.where(chroma > 0, hue / 6, torch.zeros_like(hue))
    return torch.stack([hue, saturation, value])


def _hsv_to_rgb(image: torch.Tensor) -> torch.Tensor:
    hue, saturation, value = image.unbind(0)
    k = (torch.tensor([5.0, 3.0, 1.0])[:, None, None] + hue * 6) % 6
    return value - value * saturation * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def adjust_saturation_hsv(image: torch.Tensor, factor: float) -> torch.Tensor:
    """Scale the HSV saturation by `factor` (TF semantics); image (3, H, W) in [0, 1]."""
    hsv = _rgb_to_hsv(image)
    hsv[1] = (hsv[1] * factor).clamp(0, 1)
    return _hsv_to_rgb(hsv)


def augment_image(image: torch.Tensor, params: AugmentParams) -> torch.Tensor:
    """Apply crop, brightness, contrast, saturation, hue in that order; (3, H, W) in [0, 1] -> same."""
    image = crop_and_resize(image, params.crop_box).clamp(0, 1)
    image = (image + params.brightness_delta).clamp(0, 1)
    mean = image.mean(dim=(1, 2), keepdim=True)
    image = ((image - mean) * params.contrast_factor + mean).clamp(0, 1)
    image = adjust_saturation_hsv(image, params.saturation_factor).clamp(0, 1)
    return TF.adjust_hue(image, params.hue_delta).clamp(0, 1)


@functools.lru_cache(maxsize=8)
def _tower_constants(norm: ImageNormalization, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of both towers in `dtype`, (2, 3, 1, 1), DINOv2 first: the values torchvision's normalize
    uses.

    Memoised (read-only tensors): a run normalises every sample with the same constants.
    """
    mean = torch.tensor([norm.dino_mean, norm.siglip_mean], dtype=dtype)
    std = torch.tensor([norm.dino_std, norm.siglip_std], dtype=dtype)
    return mean[:, :, None, None], std[:, :, None, None]


def normalize_dual(images: torch.Tensor, norm: ImageNormalization) -> torch.Tensor:
    """(I, 3, H, W) or (3, H, W) in [0, 1] -> (6·I, H, W): per image, DINOv2 channels, then SigLIP ones.

    One broadcast `(x - mean) / std` in the images' dtype for all images and both towers: elementwise the
    same arithmetic as torchvision's `normalize`, so the values are bit-identical to normalising each image
    twice.
    """
    mean, std = _tower_constants(norm, images.dtype)
    images = images.reshape(-1, 1, 3, *images.shape[-2:])  # (I, 1, 3, H, W) against (2, 3, 1, 1)
    return (images - mean).div_(std).flatten(0, 2)


def build_pixel_values(
    images: Sequence[np.ndarray],
    image_size: int,
    norm: ImageNormalization = ImageNormalization(),
    augment: AugmentParams | None = None,
    center_crop_area: float | None = None,
    resize_method: str = "bicubic",
) -> torch.Tensor:
    """uint8 images [(H, W, 3)] * I -> float32 (6·I, image_size, image_size) model input.

    `augment` applies training augmentation; `center_crop_area` the inference centre crop
    (use the same area as training's random crop). Both work on uint8 images and give uint8
    images, as the original's TensorFlow pipeline hands uint8 images to the processor, which
    divides by 255 (torchvision's `to_tensor`) and normalises.
    """
    resized = np.stack([resize_image(np.asarray(image), image_size, resize_method) for image in images])
    pixels = torch.from_numpy(resized).permute(0, 3, 1, 2).contiguous()  # (I, 3, S, S) uint8
    if augment is not None:
        pixels = to_uint8(torch.stack([augment_image(p, augment) for p in to_unit_float(pixels)]))
    elif center_crop_area is not None:
        pixels = center_crop(pixels, center_crop_area)
    return normalize_dual(pixels.float().div_(255), norm)
