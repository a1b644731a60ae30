"""Encoded image bytes (JPEG/PNG, as TFDS stores them) <-> uint8 arrays (H, W, C).

JPEG is decoded like TensorFlow's `decode_jpeg` defaults, which TFDS uses: libjpeg-turbo with the
fast integer DCT and fancy (smooth) chroma upsampling. `simplejpeg` exposes exactly these options,
so pixels are identical to TFDS's (checked by the `tf` tests); PIL's decoder uses the accurate
DCT and differs by a few levels. Without simplejpeg installed, PIL is used. PNG goes through PIL.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

try:
    import simplejpeg
except ImportError:  # optional: PIL decodes JPEG too, a few levels off TensorFlow's pixels
    simplejpeg = None

_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


class ImageDecodeError(ValueError):
    """Stored image bytes that do not decode to the declared image."""


def decode_image(data: bytes, channels: int = 3, where: str = "image", jpeg_dct: str = "fast") -> np.ndarray:
    """Decode JPEG/PNG bytes to uint8 (H, W, channels); `where` names the image in errors.

    `jpeg_dct="fast"` reproduces TensorFlow's default JPEG decoding; "accurate" uses the slow
    integer DCT (TensorFlow's dct_method="INTEGER_ACCURATE", PIL's default).
    """
    if simplejpeg is not None and data[:2] == b"\xff\xd8" and channels in (1, 3):
        try:
            array = simplejpeg.decode_jpeg(
                data,
                colorspace="RGB" if channels == 3 else "GRAY",
                fastdct=jpeg_dct == "fast",
                fastupsample=False,
            )
        except ValueError as e:
            message = f"{where}: could not decode the stored JPEG ({len(data)} bytes): {e}"
            raise ImageDecodeError(message) from e
        return array
    try:
        with Image.open(io.BytesIO(data)) as image:
            image = image.convert(_MODES[channels]) if image.mode != _MODES[channels] else image
            array = np.asarray(image)
    except Exception as e:  # PIL raises several types for bad data
        raise ImageDecodeError(f"{where}: could not decode the stored image ({len(data)} bytes): {e}") from e
    return array[:, :, None] if array.ndim == 2 else array


def encode_image(array: np.ndarray, image_format: str = "jpeg", quality: int = 95) -> bytes:
    """Encode uint8 (H, W, C) as JPEG or PNG bytes.

    JPEG as TensorFlow's `encode_jpeg` defaults (which TFDS and OpenVLA-OFT's LIBERO utilities use): libjpeg
    at `quality` (TF's default 95), 4:2:0 chroma, accurate integer DCT; the decoded pixels equal those of TF's
    bytes (the headers differ). simplejpeg's encoder does not match them, so PIL encodes.
    """
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] not in _MODES:
        raise ValueError(f"expected a uint8 image (H, W, 1|3|4), found {array.dtype} {array.shape}")
    image = Image.fromarray(array[:, :, 0] if array.shape[-1] == 1 else array)
    buffer = io.BytesIO()
    if image_format == "jpeg":
        image.save(buffer, format="JPEG", quality=quality, subsampling="4:2:0")
    elif image_format == "png":
        image.save(buffer, format="PNG")
    else:
        raise ValueError(f"image format must be 'jpeg' or 'png', found {image_format!r}")
    return buffer.getvalue()
