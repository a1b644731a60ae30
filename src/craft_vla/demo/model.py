"""The demo's model: the "craft-demo" preset sized for the embedded suite, and its word tokenizer.

The preset lives in `craft_vla.models.config` so that the trainer rebuilds the same model from the
pretrained snapshot with `--model craft-demo --vlm_path SNAPSHOT`. Its third-person image is cut into
one patch per grid cell of the suite, so patch k is cell (k // grid, k % grid).
"""

from __future__ import annotations

from typing import Any

from craft_vla.data.prompt import vla_prompt_text
from craft_vla.data.tokenizers import WordTokenizer
from craft_vla.models import VLAAdapterConfig, get_config
from craft_vla.sim import ACTION_DIM, STATE_DIM, WorldConfig, vocabulary

DEMO_PRESET = "craft-demo"


def demo_tokenizer() -> WordTokenizer:
    """Every word the suite writes (instructions, questions, answers) and every word
    of the VLA prompt template."""
    return WordTokenizer.from_texts([vla_prompt_text(" ".join(vocabulary()))])


def demo_config(tokenizer: WordTokenizer | None = None, **overrides: Any) -> VLAAdapterConfig:
    """The "craft-demo" preset (top-level fields replaced by `overrides`), checked
    against the suite and tokenizer."""
    config = get_config(DEMO_PRESET, **overrides)
    tokenizer = tokenizer or demo_tokenizer()
    grid = WorldConfig().grid
    found = {
        "action_dim": config.action_dim,
        "proprio_dim": config.proprio_dim,
        "patches per side": config.image_size // config.featurizer.patch_size,
    }
    expected = {"action_dim": ACTION_DIM, "proprio_dim": STATE_DIM, "patches per side": grid}
    if found != expected:
        raise ValueError(
            f"the {DEMO_PRESET!r} model does not fit the embedded suite: expected {expected}, found {found}"
        )
    if tokenizer.vocab_size > config.llm.vocab_size:
        raise ValueError(
            f"the demo tokenizer has {tokenizer.vocab_size} tokens, more than the {DEMO_PRESET!r} preset's "
            f"vocabulary of {config.llm.vocab_size}: raise llm.vocab_size in craft_vla.models.config"
        )
    return config
