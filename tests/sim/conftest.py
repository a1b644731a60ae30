"""Shared helpers of the sim tests."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest

from craft_vla.sim.attributes import COLOUR_RGB, COLOURS


def _hue(rgb) -> float:
    return colorsys.rgb_to_hsv(*(float(c) for c in rgb))[0]


@pytest.fixture
def nearest_colour():
    """pixel (3,) -> the palette colour nearest in hue (shading and highlights
    change value and saturation)."""
    palette = np.array([_hue(c) for c in COLOUR_RGB])

    def nearest(pixel: np.ndarray) -> str:
        gap = np.abs(palette - _hue(np.asarray(pixel, dtype=np.float64) / 255.0))
        return COLOURS[int(np.argmin(np.minimum(gap, 1.0 - gap)))]

    return nearest
