"""The closed sets of object attributes (CLEVR-like) and the words that name them.

Tasks name objects by colour and shape only; size and material are never named by an
instruction, so perception questions about them are the ones the manipulation tasks do not need.
"""

from __future__ import annotations

COLOURS = ("red", "green", "blue", "yellow", "purple", "cyan")
SHAPES = ("cube", "ball", "pyramid")  # top-down: square, disc, triangle
SHAPE_PLURALS = ("cubes", "balls", "pyramids")
SIZES = ("small", "large")
MATERIALS = ("rubber", "metal")  # metal objects carry a bright specular highlight
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six")

# Linear RGB in [0, 1] of each colour's lit surface; far apart in hue so a 64 px frame separates them.
COLOUR_RGB = (
    (0.86, 0.16, 0.14),
    (0.18, 0.66, 0.22),
    (0.16, 0.30, 0.88),
    (0.93, 0.80, 0.12),
    (0.56, 0.22, 0.72),
    (0.12, 0.78, 0.82),
)


def object_name(colour: int, shape: int) -> str:
    """The words an instruction uses for an object, e.g. "red cube"."""
    return f"{COLOURS[colour]} {SHAPES[shape]}"
