"""The LIBERO evaluation protocol behind VLA-Adapter's (and OpenVLA-OFT's) published success rates.

Pure numpy functions, one per protocol fact; docs/eval_libero.md lists each fact with its source.
Images are (H, W, 3) uint8; actions are (T, A) float arrays in environment units. Resizing to the
model's input and the centre crop are the policy's training preprocessing (`craft_vla.data.image`),
applied by the policy adapter, not here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from craft_vla.data.image_codec import decode_image, encode_image

# Per-suite episode limits in policy steps (settle steps not counted); each is a little above
# the longest training demonstration of that suite.
MAX_EPISODE_STEPS = {
    "libero_spatial": 220,
    "libero_object": 280,
    "libero_goal": 300,
    "libero_10": 520,
    "libero_90": 400,
}


@dataclass(frozen=True)
class LiberoProtocol:
    """Every number of the protocol in one place; the defaults are the published protocol."""

    env_resolution: int = 256  # camera height and width of both views
    jpeg_quality: int | None = 95  # JPEG round trip, as the stored RLDS frames went through; None: off
    settle_steps: int = 10  # dummy steps while objects settle after the initial state is set
    settle_action: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0)  # no motion, gripper open
    env_seed: int = 0
    num_open_loop_steps: int = 8  # actions executed from each predicted chunk before the next query


def base_suite(suite: str) -> str | None:
    """The original LIBERO suite a (possibly LIBERO-PRO perturbed) suite derives from, or None."""
    for base in MAX_EPISODE_STEPS:
        if suite == base or suite.startswith(base + "_"):
            return base
    return None


def max_episode_steps(suite: str) -> int:
    """The step limit of `suite`: its base suite's (a perturbation does not change the task length)."""
    base = base_suite(suite)
    if base is None:
        raise ValueError(
            f"no published step limit for suite {suite!r}: it derives from none of "
            f"{sorted(MAX_EPISODE_STEPS)}; "
            "pass --max_steps explicitly"
        )
    return MAX_EPISODE_STEPS[base]


def rotate_180(image: np.ndarray) -> np.ndarray:
    """Rotate an (H, W, C) image by 180°: the simulator's frames are upside down relative to the RLDS data."""
    return np.ascontiguousarray(image[::-1, ::-1])


def jpeg_roundtrip(image: np.ndarray, quality: int | None) -> np.ndarray:
    """Encode an (H, W, 3) uint8 image as JPEG and decode it again (the RLDS frames are JPEG); None: as is.

    As OpenVLA-OFT's `resize_image_for_policy` does with TensorFlow (`encode_jpeg`, quality 95, then
    `decode_image`): libjpeg's encoder at `quality` with 4:2:0 chroma gives TF's coefficients, and the
    decoder is the RLDS reader's, TF's settings (fast integer DCT, fancy upsampling), so evaluation frames
    carry the same pixels as the training frames. PIL's own decoder differs in ~60 % of the values.
    """
    if quality is None:
        return image
    return decode_image(encode_image(image, "jpeg", quality), where="JPEG round trip")


def stored_frame(env_image: np.ndarray, protocol: LiberoProtocol) -> np.ndarray:
    """A simulator frame as the training data store it: rotated 180°, JPEG round trip; (H, W, 3) uint8."""
    return jpeg_roundtrip(rotate_180(env_image), protocol.jpeg_quality)


def quat_to_axis_angle(quat: np.ndarray) -> np.ndarray:
    """Quaternion (x, y, z, w) -> axis-angle (3,), the rotation angle 2·acos(w) times the unit axis.

    A near-zero rotation (sin of the half angle ≈ 0) gives zeros. For w < 0 the angle exceeds π,
    as in the stored LIBERO proprio; no sign canonicalisation.
    """
    x, y, z, w = (float(v) for v in quat)
    w = min(max(w, -1.0), 1.0)
    sin_half = math.sqrt(1.0 - w * w)
    if math.isclose(sin_half, 0.0):
        return np.zeros(3)
    return np.array([x, y, z]) * (2.0 * math.acos(w) / sin_half)


def libero_proprio(eef_pos: np.ndarray, eef_quat: np.ndarray, gripper_qpos: np.ndarray) -> np.ndarray:
    """The 8-D proprio of the LIBERO datasets: EEF position (3), axis-angle (3), two finger positions (2)."""
    position, fingers = np.asarray(eef_pos, float), np.asarray(gripper_qpos, float)
    return np.concatenate([position, quat_to_axis_angle(eef_quat), fingers])


def gripper_to_env(actions: np.ndarray) -> np.ndarray:
    """(T, A) policy actions (gripper in [0, 1], 1 = open) -> environment actions (−1 = open, +1 = close).

    The gripper is mapped to [−1, 1], binarised to its sign (exactly 0.5 gives 0) and sign-flipped;
    the other dimensions pass through unchanged.
    """
    env_actions = np.array(actions, dtype=np.float64, copy=True)
    env_actions[..., -1] = -np.sign(2.0 * env_actions[..., -1] - 1.0)
    return env_actions


def open_loop_actions(chunk: np.ndarray, num_open_loop_steps: int) -> np.ndarray:
    """The actions executed from one predicted (T, A) chunk, in order: its first `num_open_loop_steps`."""
    if not 1 <= num_open_loop_steps <= len(chunk):
        raise ValueError(
            f"num_open_loop_steps must be between 1 and the chunk length {len(chunk)}, "
            f"got {num_open_loop_steps}"
        )
    return chunk[:num_open_loop_steps]
