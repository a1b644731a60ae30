"""Shaded, anti-aliased sprites of the objects, their shadows and the gripper, drawn with numpy.

A sprite is a premultiplied RGB patch (h, w, 3) and an alpha patch (h, w, 1), float32, placed by
the integer pixel of its centre; the centre's fractional pixel position (`phase`) is baked in.
Shapes are signed-distance functions in units of the object's radius (u right, v up), so edges are
anti-aliased by the distance in pixels. The light comes from the upper left: surfaces shade by
their normal, metal objects carry a bright specular highlight, rubber ones are matte.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LIGHT = np.array([-0.45, 0.55, 0.70]) / np.linalg.norm([-0.45, 0.55, 0.70])
AMBIENT, DIFFUSE = 0.35, 0.75
CUBE_HALF = 0.82  # half side of a cube's top face, in radii
PYRAMID_INRADIUS = 0.6  # distance from a pyramid's centre to its edges, in radii
# outward edge normals of the pyramid's triangular footprint (apex up)
PYRAMID_NORMALS = np.array([[0.0, -1.0], [np.cos(np.pi / 6), 0.5], [-np.cos(np.pi / 6), 0.5]])
HIGHLIGHT_CENTRE, HIGHLIGHT_WIDTH = np.array([-0.3, 0.3]), 0.35
SHADOW_ALPHA, SHADOW_SOFTNESS = 0.35, 0.25
RIM_WIDTH = 0.18  # edge darkening band, in radii
GRIPPER_GREY, GRIPPER_DARK = 0.88, 0.22


@dataclass(frozen=True)
class Sprite:
    """A patch to alpha-composite: `rgb` (h, w, 3) premultiplied, `alpha` (h, w, 1); `origin` = (row, col) of
    the patch's top-left pixel relative to the pixel holding the sprite's centre."""

    rgb: np.ndarray
    alpha: np.ndarray
    origin: tuple[int, int]


def local_grid(
    extent_px: float, phase: tuple[float, float], unit_px: float
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Pixel-centre coordinates (u right, v up) in units of `unit_px` pixels around a centre at `phase`.

    Returns u, v of shape (h, w) and the patch origin (row, col) relative to the centre's pixel.
    """
    half = int(np.ceil(extent_px)) + 1
    offsets = np.arange(-half, half + 1) + 0.5
    u = (offsets[None, :] - phase[0]) / unit_px
    v = -(offsets[:, None] - phase[1]) / unit_px
    u, v = np.broadcast_arrays(u, v)
    return u, v, (-half, -half)


def shape_distance(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance to the shape's outline (positive inside), in radii: (h, w)."""
    if shape == "ball":
        return 1.0 - np.hypot(u, v)
    if shape == "cube":
        return CUBE_HALF - np.maximum(np.abs(u), np.abs(v))
    if shape == "pyramid":
        return PYRAMID_INRADIUS - np.max(np.stack([u, v], -1) @ PYRAMID_NORMALS.T, axis=-1)
    raise ValueError(f"unknown shape {shape!r}")


def shape_normals(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Unit surface normals (h, w, 3) seen from above: a sphere, a bevelled box top, three pyramid facets."""
    if shape == "ball":
        z = np.sqrt(np.clip(1.0 - u * u - v * v, 0.0, None))
        n = np.stack([u, v, z], -1)
    elif shape == "cube":
        tilt = np.clip((np.stack([np.abs(u), np.abs(v)], -1) - 0.6) / 0.22, 0.0, 1.0) * 0.9
        n = np.concatenate([np.sign(np.stack([u, v], -1)) * tilt, np.ones(u.shape + (1,))], -1)
    else:
        facet = np.argmax(np.stack([u, v], -1) @ PYRAMID_NORMALS.T, axis=-1)
        n = np.concatenate([PYRAMID_NORMALS[facet] * 0.7, np.ones(u.shape + (1,))], -1)
    return n / np.linalg.norm(n, axis=-1, keepdims=True)


def object_sprite(
    shape: str, rgb: tuple[float, float, float], metal: bool, radius_px: float, phase: tuple[float, float]
) -> Sprite:
    """An object seen from above, shaded, with a dark rim, and a specular highlight if metal."""
    u, v, origin = local_grid(radius_px * 1.25, phase, radius_px)
    edge = shape_distance(shape, u, v)
    alpha = np.clip(edge * radius_px + 0.5, 0.0, 1.0)
    lambert = np.clip(shape_normals(shape, u, v) @ LIGHT, 0.0, None)
    shade = (AMBIENT + DIFFUSE * lambert) * (0.55 + 0.45 * np.clip(edge / RIM_WIDTH, 0.0, 1.0))
    colour = np.asarray(rgb) * shade[..., None] * (0.75 if metal else 1.0)
    if metal:
        glint = np.exp(
            -((u - HIGHLIGHT_CENTRE[0]) ** 2 + (v - HIGHLIGHT_CENTRE[1]) ** 2) / HIGHLIGHT_WIDTH**2
        )
        colour = colour + (1.0 - colour) * (0.95 * glint)[..., None]
    return _premultiplied(colour, alpha, origin)


def shadow_sprite(shape: str, radius_px: float, phase: tuple[float, float]) -> Sprite:
    """A soft dark footprint of the shape."""
    u, v, origin = local_grid(radius_px * (1.25 + SHADOW_SOFTNESS), phase, radius_px)
    alpha = SHADOW_ALPHA * np.clip(shape_distance(shape, u, v) / SHADOW_SOFTNESS + 0.5, 0.0, 1.0)
    return _premultiplied(np.zeros(alpha.shape + (3,)), alpha, origin)


def gripper_sprite(
    closed: bool, unit_px: float, phase: tuple[float, float], finger_gap: tuple[float, float], flange: float
) -> Sprite:
    """The gripper from above: a translucent flange disc and two light fingers with dark outlines.

    `unit_px` is pixels per table unit; `finger_gap` the fingers' x offset (open, closed), `flange`
    the flange radius, both in table units.
    """
    finger_x = finger_gap[1] if closed else finger_gap[0]
    u, v, origin = local_grid((finger_x + 0.02) * unit_px, phase, unit_px)
    flange_alpha = 0.55 * np.clip((flange - np.hypot(u, v)) * unit_px + 0.5, 0.0, 1.0)
    finger_edge = np.minimum(0.009 - np.abs(np.abs(u) - finger_x), 0.028 - np.abs(v))
    finger_alpha = np.clip(finger_edge * unit_px + 1.0, 0.0, 1.0)
    outline = np.clip(finger_edge * unit_px - 0.5, 0.0, 1.0)  # 1 inside, 0 on the outline pixel
    finger_colour = GRIPPER_DARK + (GRIPPER_GREY - GRIPPER_DARK) * outline
    alpha = finger_alpha + flange_alpha * (1.0 - finger_alpha)
    grey = (finger_colour * finger_alpha + GRIPPER_DARK * flange_alpha * (1.0 - finger_alpha)) / np.maximum(
        alpha, 1e-6
    )
    return _premultiplied(np.repeat(grey[..., None], 3, -1), alpha, origin)


def _premultiplied(colour: np.ndarray, alpha: np.ndarray, origin: tuple[int, int]) -> Sprite:
    alpha = alpha.astype(np.float32)[..., None]
    return Sprite((np.clip(colour, 0.0, 1.0) * alpha).astype(np.float32), alpha, origin)
