"""Every word the suite ever writes: instructions (all phrasings, held-out ones included), questions, answers.

Texts are lower case words separated by single spaces, so `text.split()` tokenises them; a
word-level tokenizer built from `vocabulary()` covers all of them.
"""

from __future__ import annotations

import string

from craft_vla.sim.attributes import COLOURS, MATERIALS, NUMBERS, SHAPE_PLURALS, SHAPES, SIZES
from craft_vla.sim.layout import CENTRE, CORNERS, RELATION_PHRASES, SIDES, cell_names
from craft_vla.sim.questions import CATEGORIES, YES_NO
from craft_vla.sim.tasks import make_tasks
from craft_vla.sim.world import WorldConfig


def slot_values(grid: int) -> dict[str, tuple[str, ...]]:
    """The phrases each template slot can take."""
    objects = tuple(f"{c} {s}" for c in COLOURS for s in SHAPES)
    return {
        "a": objects,
        "b": objects,
        "object": objects,
        "colour": COLOURS,
        "shape": SHAPES,
        "shapes": SHAPE_PLURALS,
        "size": SIZES,
        "side": (*SIDES, *CORNERS, CENTRE),
        "relation": tuple(RELATION_PHRASES.values()),
        "cell": tuple(cell_names(grid)),
    }


def answer_vocabulary(grid: int | None = None) -> list[str]:
    """Every answer word, sorted: colours, shapes, sizes, materials, numbers, yes/no, cell names."""
    grid = grid or WorldConfig().grid
    return sorted({*COLOURS, *SHAPES, *SIZES, *MATERIALS, *NUMBERS, *YES_NO, *cell_names(grid)})


def vocabulary(grid: int | None = None) -> list[str]:
    """Every word of every instruction template, question template, slot value and answer, sorted."""
    grid = grid or WorldConfig().grid
    templates = [t for task in make_tasks().values() for t in (*task.templates, *task.heldout_templates)]
    templates += [t for c in CATEGORIES for t in c.templates]
    words = set(answer_vocabulary(grid))
    for template in templates:
        literal = [text for text, _, _, _ in string.Formatter().parse(template)]
        words.update(" ".join(literal).split())
    for values in slot_values(grid).values():
        words.update(w for phrase in values for w in phrase.split())
    return sorted(words)
