"""Where the bridge conditions sit in the multimodal sequence: one definition for
training, anchors and inference.

The multimodal sequence is [first token, P patch tokens, rest of the prompt, Q action queries, padding];
the action queries are the last Q real tokens of each row of the text `attention_mask`.
"""

from __future__ import annotations

import torch
from torch import Tensor


def placeholder_mask(attention_mask: Tensor, num_action_queries: int) -> Tensor:
    """(B, S) bool: the last `num_action_queries` real tokens of each row (the action-query placeholders)."""
    mask = attention_mask.bool()
    counts = mask.sum(dim=1)
    if bool(((counts <= num_action_queries) | ~mask[:, 0]).any()):  # one host sync for both checks
        raise ValueError(
            f"each row must be right-padded and hold its prompt plus {num_action_queries} action-query "
            f"placeholders; found first-position mask {mask[:, 0].tolist()} and "
            f"real-token counts {counts.tolist()}"
        )
    from_end = mask.flip(1).long().cumsum(dim=1).flip(1)
    return mask & (from_end <= num_action_queries)


def insert_patches(text: Tensor, patches: Tensor) -> Tensor:
    """[text[:, :1], patches, text[:, 1:]] on dim 1: the patches follow the first token."""
    return torch.cat([text[:, :1], patches, text[:, 1:]], dim=1)


def bridge_positions(
    attention_mask: Tensor, num_patches: int, num_action_queries: int, layout: str = "shifted"
) -> tuple[Tensor, Tensor]:
    """Raw-latent and action-query positions (raw_mask, aq_mask), both bool (B, S + num_patches).

    layout "shifted" reproduces VLA-Adapter's training slicing, which released policies were trained on:
    C_R = the first `num_patches` positions (the first token and all patches but the last) and
    C_AQ = the position one before each placeholder (the last prompt token and the first Q - 1 queries).
    layout "aligned": C_R = the patch positions, C_AQ = the placeholder positions.
    """
    queries = placeholder_mask(attention_mask, num_action_queries)
    batch = queries.shape[0]
    no_patches = queries.new_zeros(batch, num_patches)
    aq_mask = insert_patches(queries, no_patches)
    raw_mask = torch.zeros_like(aq_mask)
    if layout == "shifted":
        raw_mask[:, :num_patches] = True
        aq_mask = aq_mask.roll(-1, dims=1)  # placeholders are never at position 0, so nothing wraps
    elif layout == "aligned":
        raw_mask[:, 1 : num_patches + 1] = True
    else:
        raise ValueError(f"layout must be 'shifted' or 'aligned', got {layout!r}")
    return raw_mask, aq_mask


def text_positions(attention_mask: Tensor, num_patches: int, num_action_queries: int) -> Tensor:
    """(B, S + num_patches) bool: the prompt's text tokens, after the patches and before the action queries.

    Causal attention makes them the VLM's reading of the instruction and the image, untouched by the
    queries: the language pathway that the patch tokens of C_R do not cover (docs/method.md)."""
    text = attention_mask.bool() & ~placeholder_mask(attention_mask, num_action_queries)
    text[:, 0] = False
    return insert_patches(text, text.new_zeros(text.shape[0], num_patches))


def mask_positions(mask: Tensor, count: int) -> Tensor:
    """Indices (B, count) of the true entries of `mask` (B, S), in order; each row has `count` of them.

    A stable sort instead of boolean indexing, so no host synchronisation.
    """
    return torch.sort((~mask).to(torch.uint8), dim=1, stable=True).indices[:, :count]


def gather_tokens(hidden: Tensor, positions: Tensor) -> Tensor:
    """The states (B, S, D) at `positions` (B, N) -> (B, N, D)."""
    return hidden.gather(1, positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
