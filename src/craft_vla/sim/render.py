"""Two cameras on the tabletop: a third-person view of the whole table and a wrist view on the gripper.

Both look straight down. The third-person image spans the table exactly (x right, y up); the wrist
image is centred on the gripper and spans 1 / `wrist_zoom` of the table's width, with the floor
beyond the table's edge. Higher objects (stacked, or held) are drawn larger and cast shadows
further to the lower right. Frames are composed from cached sprites (`sprites`), so a frame costs
a background copy and a dozen small alpha blends; the first frames of a renderer fill its cache.
"""

from __future__ import annotations

import time

import numpy as np

from craft_vla.sim import sprites
from craft_vla.sim.attributes import COLOUR_RGB, MATERIALS, SHAPES
from craft_vla.sim.world import HELD_HEIGHT, Scene, WorldConfig, heights

TABLE_RGB = np.array([0.80, 0.76, 0.70], dtype=np.float32)
FLOOR_RGB = np.array([0.30, 0.30, 0.33], dtype=np.float32)
HEIGHT_SCALE = 0.12  # apparent size grows by this fraction per level of height
SHADOW_OFFSET = (0.012, 0.018)  # shadow shift to the lower right, table units: at height 0, per level
FINGER_X = (0.05, 0.03)  # fingers' x offset from the gripper centre, open and closed
FLANGE_RADIUS = 0.03
GRIPPER_HEIGHT = HELD_HEIGHT + 1


class Camera:
    """Orthographic top-down camera: `size` px square, `scale` px per table unit, looking at `centre` (2,)."""

    def __init__(self, size: int, scale: float, centre: np.ndarray) -> None:
        self.size, self.scale, self.centre = size, float(scale), np.asarray(centre, dtype=np.float64)

    def to_pixels(self, points: np.ndarray) -> np.ndarray:
        """(..., 2) table points -> (..., 2) pixel coordinates (col, row), pixel k spanning [k, k + 1)."""
        rel = (np.asarray(points) - self.centre) * self.scale
        return np.stack([rel[..., 0], -rel[..., 1]], -1) + self.size / 2.0

    def background(self) -> np.ndarray:
        """(size, size, 3) float32: the table with a faint texture fixed to the table, the floor around it."""
        axis = (np.arange(self.size) + 0.5 - self.size / 2.0) / self.scale
        x, y = self.centre[0] + axis, self.centre[1] - axis
        grain_x = 0.015 * np.sin(2 * np.pi * 11.0 * x) + 0.015 * np.sin(2 * np.pi * 3.0 * x + 1.0)
        grain_y = 0.015 * np.sin(2 * np.pi * 7.0 * y + 0.5)
        shade = (
            1.0
            + grain_x[None, :]
            + grain_y[:, None]
            - 0.12 * ((x[None, :] - 0.5) ** 2 + (y[:, None] - 0.5) ** 2)
        )
        on_table = ((x >= 0) & (x <= 1))[None, :] & ((y >= 0) & (y <= 1))[:, None]
        image = np.where(on_table[..., None], TABLE_RGB * shade[..., None], FLOOR_RGB)
        return image.astype(np.float32)


class Renderer:
    """Renders scenes to uint8 (H, W, 3) frames; holds the sprite cache of its image size."""

    def __init__(
        self,
        image_size: int = 64,
        wrist_zoom: float = 2.5,
        config: WorldConfig | None = None,
        subpixel: int = 4,
    ) -> None:
        if image_size < 16:
            raise ValueError(f"image_size must be at least 16 px, got {image_size}")
        self.image_size, self.wrist_zoom, self.config = (
            int(image_size),
            float(wrist_zoom),
            config or WorldConfig(),
        )
        self.subpixel = subpixel
        self._third_person = Camera(self.image_size, self.image_size, np.array([0.5, 0.5]))
        self._table = self._third_person.background()
        # the wrist view's background is cropped from one large image of the table and the floor around it
        self._wrist_scale = self.image_size * self.wrist_zoom
        self._wrist_world = Camera(
            int(np.ceil(self._wrist_scale)) + self.image_size + 2, self._wrist_scale, np.array([0.5, 0.5])
        )
        self._wrist_table = self._wrist_world.background()
        self._cache: dict[tuple, sprites.Sprite] = {}

    def render(self, scene: Scene) -> tuple[np.ndarray, np.ndarray]:
        """(third-person, wrist) frames of `scene`, each uint8 (H, W, 3)."""
        return self.third_person(scene), self.wrist(scene)

    def third_person(self, scene: Scene) -> np.ndarray:
        return self._draw(scene, self._third_person, self._table, self.subpixel)

    def wrist(self, scene: Scene) -> np.ndarray:
        """The wrist view, centred on the gripper to the nearest pixel."""
        half = self.image_size // 2
        col, row = np.round(self._wrist_world.to_pixels(np.clip(scene.gripper, 0.0, 1.0))).astype(int)
        background = self._wrist_table[
            row - half : row - half + self.image_size, col - half : col - half + self.image_size
        ]
        offset = (
            np.array([col - self._wrist_world.size / 2.0, self._wrist_world.size / 2.0 - row])
            / self._wrist_scale
        )
        camera = Camera(
            self.image_size, self._wrist_scale, self._wrist_world.centre + offset + self._half_pixel()
        )
        return self._draw(scene, camera, background, 1, gripper_at=camera.centre)

    def _half_pixel(self) -> np.ndarray:
        """Shift of the crop's centre from the pixel corner it was cut at, for an odd image size."""
        odd = (self.image_size % 2) * 0.5 / self._wrist_scale
        return np.array([odd, -odd])

    def _draw(
        self,
        scene: Scene,
        camera: Camera,
        background: np.ndarray,
        subpixel: int,
        gripper_at: np.ndarray | None = None,
    ) -> np.ndarray:
        """Compose a frame; the gripper is drawn at `gripper_at` (the wrist
        camera's centre) or where it is."""
        canvas = background.copy()
        height = heights(scene)
        radius = scene.radii(self.config)
        order = np.lexsort((np.arange(scene.num_objects), height))
        for i in order:
            h = int(height[i])
            radius_px = radius[i] * camera.scale * (1.0 + HEIGHT_SCALE * h)
            shape = SHAPES[scene.shape[i]]
            self._blit(
                canvas,
                camera,
                scene.position[i] + self._shadow_shift(h),
                subpixel,
                ("shadow", shape, radius_px),
            )
            look = ("object", shape, int(scene.colour[i]), MATERIALS[scene.material[i]] == "metal", radius_px)
            self._blit(canvas, camera, scene.position[i], subpixel, look)
        gripper = scene.gripper if gripper_at is None else gripper_at
        self._blit(canvas, camera, gripper, max(subpixel, 2), ("gripper", bool(scene.closed), camera.scale))
        return (np.clip(canvas, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

    @staticmethod
    def _shadow_shift(height: int) -> np.ndarray:
        shift = SHADOW_OFFSET[0] + SHADOW_OFFSET[1] * height
        return np.array([shift, -shift])

    def _sprite(self, look: tuple, phase: tuple[float, float]) -> sprites.Sprite:
        key = (*look, phase)
        sprite = self._cache.get(key)
        if sprite is None:
            kind = look[0]
            if kind == "object":
                _, shape, colour, metal, radius_px = look
                sprite = sprites.object_sprite(shape, COLOUR_RGB[colour], metal, radius_px, phase)
            elif kind == "shadow":
                sprite = sprites.shadow_sprite(look[1], look[2], phase)
            else:
                sprite = sprites.gripper_sprite(look[1], look[2], phase, FINGER_X, FLANGE_RADIUS)
            self._cache[key] = sprite
        return sprite

    def _blit(
        self, canvas: np.ndarray, camera: Camera, point: np.ndarray, subpixel: int, look: tuple
    ) -> None:
        """Alpha-composite the sprite `look` centred at table point `point` (2,) onto `canvas` in place."""
        col, row = camera.to_pixels(point)
        quantised = np.round(np.array([col, row]) * subpixel) / subpixel
        anchor = np.floor(quantised).astype(int)
        sprite = self._sprite(look, (float(quantised[0] - anchor[0]), float(quantised[1] - anchor[1])))
        top, left = anchor[1] + sprite.origin[0], anchor[0] + sprite.origin[1]
        h, w = sprite.alpha.shape[:2]
        r0, c0 = max(top, 0), max(left, 0)
        r1, c1 = min(top + h, canvas.shape[0]), min(left + w, canvas.shape[1])
        if r0 >= r1 or c0 >= c1:
            return
        rows, cols = slice(r0 - top, r1 - top), slice(c0 - left, c1 - left)
        region = canvas[r0:r1, c0:c1]
        region *= 1.0 - sprite.alpha[rows, cols]
        region += sprite.rgb[rows, cols]


def render_ms(image_size: int, states: list[Scene]) -> dict[str, float]:
    """Milliseconds per frame of each view: one pass over `states` filling the sprite cache, then one more."""
    renderer, out = Renderer(image_size), {}
    for view in ("third_person", "wrist"):
        render = getattr(renderer, view)
        for run in ("first", "warm"):
            start = time.perf_counter()
            for scene in states:
                render(scene)
            out[f"{view}_{run}"] = (time.perf_counter() - start) / len(states) * 1e3
    return out
