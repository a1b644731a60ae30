"""The LIBERO protocol pieces against values computed by hand (no simulator)."""

import io
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from craft_vla.data.image_codec import decode_image, encode_image
from craft_vla.eval.protocol import (
    MAX_EPISODE_STEPS,
    LiberoProtocol,
    base_suite,
    gripper_to_env,
    jpeg_roundtrip,
    libero_proprio,
    max_episode_steps,
    open_loop_actions,
    quat_to_axis_angle,
    rotate_180,
    stored_frame,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_rotate_180_reverses_rows_and_columns():
    image = np.arange(2 * 3 * 1, dtype=np.uint8).reshape(2, 3, 1)  # [[0 1 2], [3 4 5]]
    assert rotate_180(image)[..., 0].tolist() == [[5, 4, 3], [2, 1, 0]]


def test_stored_frame_is_rotated_then_jpeg_round_tripped():
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    image[:8] = 200  # bright top half
    protocol = LiberoProtocol()
    frame = stored_frame(image, protocol)
    assert frame.shape == (16, 16, 3) and frame.dtype == np.uint8
    # the bright half is now at the bottom
    assert np.abs(frame[8:].astype(int) - 200).max() <= 8 and frame[:8].max() <= 8
    assert (stored_frame(image, LiberoProtocol(jpeg_quality=None)) == rotate_180(image)).all()


def jpeg_frames() -> list[np.ndarray]:
    """The real LIBERO observation (both views; the agent view also at 256 px, as simulated), noise."""
    data = np.load(FIXTURES / "libero_spatial_observation.npz")
    rng = np.random.default_rng(0)
    full_256 = np.asarray(Image.fromarray(data["full_image"]).resize((256, 256), Image.LANCZOS))
    noise = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((256, 256, 3), (61, 45, 3))]
    return [data["full_image"], data["wrist_image"], full_256, *noise]


def test_jpeg_round_trip_decodes_like_the_rlds_reader():
    """Evaluation frames go through the decoder that reads the training frames (TF's settings), not PIL's."""
    for frame in jpeg_frames():
        got = jpeg_roundtrip(frame, 95)
        assert got.shape == frame.shape and got.dtype == np.uint8
        data = encode_image(frame, "jpeg", 95)
        np.testing.assert_array_equal(got, decode_image(data))
        pil = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        assert (pil != got).mean() > 0.3  # PIL's accurate DCT decodes other pixels


@pytest.mark.parametrize("name", ["real", "noise"])
def test_jpeg_round_trip_equals_tensorflows_stored_output(name):
    """`encode_jpeg` (defaults: quality 95, 4:2:0), then `decode_image`, as OpenVLA-OFT's LIBERO utils do."""
    ref = np.load(FIXTURES / "tf_image_reference.npz")
    np.testing.assert_array_equal(jpeg_roundtrip(ref[f"{name}/frame"], 95), ref[f"{name}/jpeg"])


@pytest.mark.tf
def test_jpeg_round_trip_equals_tensorflow():
    tf = pytest.importorskip("tensorflow")
    for frame in jpeg_frames():
        encoded = tf.image.encode_jpeg(frame)
        expected = tf.io.decode_image(encoded, expand_animations=False, dtype=tf.uint8).numpy()
        np.testing.assert_array_equal(jpeg_roundtrip(frame, 95), expected)


@pytest.mark.parametrize(
    ("quat", "expected"),
    [
        ((0.0, 0.0, 0.0, 1.0), (0.0, 0.0, 0.0)),  # identity
        ((0.0, 0.0, math.sin(math.pi / 4), math.cos(math.pi / 4)), (0.0, 0.0, math.pi / 2)),  # 90° about z
        ((1.0, 0.0, 0.0, 0.0), (math.pi, 0.0, 0.0)),  # 180° about x
        # w < 0
        ((0.0, 0.0, math.sin(3 * math.pi / 4), math.cos(3 * math.pi / 4)), (0.0, 0.0, 1.5 * math.pi)),
        ((0.0, math.sin(math.pi / 6), 0.0, math.cos(math.pi / 6)), (0.0, math.pi / 3, 0.0)),  # 60° about y
        ((1e-9, 0.0, 0.0, 1.0), (0.0, 0.0, 0.0)),  # near zero rotation
        ((0.0, 0.0, 0.0, 1.0 + 1e-12), (0.0, 0.0, 0.0)),  # w just above 1 (clipped)
    ],
)
def test_quaternion_xyzw_to_axis_angle(quat, expected):
    assert quat_to_axis_angle(np.array(quat)) == pytest.approx(expected, abs=1e-9)


def test_proprio_is_position_axis_angle_fingers():
    s = math.sin(math.pi / 4)
    proprio = libero_proprio([0.1, -0.2, 1.1], [0.0, 0.0, s, s], [0.039, -0.038])
    assert proprio == pytest.approx([0.1, -0.2, 1.1, 0.0, 0.0, math.pi / 2, 0.039, -0.038])


def test_gripper_is_mapped_binarised_and_flipped():
    policy = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, g] for g in (1.0, 0.0, 0.7, 0.2, 0.5)])
    env = gripper_to_env(policy)
    # 1 = open in training -> −1 = open in the env; 0.7 -> 0.4 -> sign +1 -> −1; 0.2 -> −0.6 -> +1; 0.5 -> 0
    assert env[:, -1].tolist() == [-1.0, 1.0, -1.0, 1.0, 0.0]
    assert (env[:, :6] == policy[:, :6]).all()
    assert policy[0, -1] == 1.0  # input untouched


def test_open_loop_executes_the_first_k_actions_in_order():
    chunk = np.arange(8 * 7, dtype=float).reshape(8, 7)
    assert (open_loop_actions(chunk, 3) == chunk[:3]).all()
    assert (open_loop_actions(chunk, 8) == chunk).all()
    for bad in (0, 9):
        with pytest.raises(ValueError, match="num_open_loop_steps"):
            open_loop_actions(chunk, bad)


def test_step_limits_per_suite_and_for_perturbed_suites():
    assert MAX_EPISODE_STEPS == {
        "libero_spatial": 220,
        "libero_object": 280,
        "libero_goal": 300,
        "libero_10": 520,
        "libero_90": 400,
    }
    cases = {
        "libero_spatial_swap": 220,
        "libero_object_lan": 280,
        "libero_goal_task": 300,
        "libero_10_object": 520,
        "libero_spatial_with_mug": 220,
        "LIBERO_GOAL": 300,
    }
    for suite, limit in cases.items():
        assert max_episode_steps(suite.lower()) == limit
    assert base_suite("libero_100") is None  # not libero_10
    with pytest.raises(ValueError, match="--max_steps"):
        max_episode_steps("libero_study_table")


def test_unnormalisation_the_evaluation_relies_on():
    from craft_vla.data.normalize import NormStats, unnormalize_bounds_q99

    f32 = lambda v: np.array(v, dtype=np.float32)  # noqa: E731
    stats = NormStats(
        mean=f32([0, 0, 0]),
        std=f32([1, 1, 1]),
        max=f32([2, 5, 1]),
        min=f32([-2, -1, 0]),
        q01=f32([-1.0, 0.0, 0.0]),
        q99=f32([1.0, 4.0, 1.0]),
        mask=np.array([True, True, False]),
    )
    # 0.5 (y + 1)(q99 − q01 + 1e-8) + q01 on masked dims: y = 0.5 -> 0.5, y = −0.5 -> 1.0; the gripper passes
    x = unnormalize_bounds_q99(f32([[0.5, -0.5, 0.7]]), stats)
    assert x[0].tolist() == pytest.approx([0.5, 1.0, 0.7], abs=1e-6)
