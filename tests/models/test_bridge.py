"""Bridge positions and the multimodal sequence layout, checked position by position."""

from __future__ import annotations

import pytest
import torch

from craft_vla.models.bridge import (
    bridge_positions,
    gather_tokens,
    mask_positions,
    placeholder_mask,
    text_positions,
)


def where(mask_row: torch.Tensor) -> list[int]:
    return torch.nonzero(mask_row).flatten().tolist()


MASK = torch.tensor(
    [[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]], dtype=torch.bool
)  # rows of 7 and 4 real tokens
P, Q = 3, 2


def test_placeholders_are_the_last_real_tokens():
    queries = placeholder_mask(MASK, Q)
    assert where(queries[0]) == [5, 6] and where(queries[1]) == [2, 3]


def test_shifted_layout_is_the_training_slicing():
    """Multimodal row: [t0, p1..p3, t1, ...]; C_R = positions 0..P-1, C_AQ = one before each query."""
    raw, aq = bridge_positions(MASK, P, Q, "shifted")
    assert raw.shape == (2, 7 + P)
    assert where(raw[0]) == where(raw[1]) == [0, 1, 2]
    # text token t >= 1 sits at t + P: row 0 queries at 8, 9 -> read 7, 8; row 1 queries at 5, 6 -> read 4, 5
    assert where(aq[0]) == [7, 8] and where(aq[1]) == [4, 5]


def test_text_positions_lie_between_the_patches_and_the_queries():
    # row 0: [t0, p1..p3, t1..t4, q, q] -> text at 4..7; row 1: [t0, p1..p3, t1, q, q, pad...] -> text at 4
    text = text_positions(MASK, P, Q)
    assert where(text[0]) == [4, 5, 6, 7] and where(text[1]) == [4]


def test_aligned_layout_reads_patches_and_queries():
    raw, aq = bridge_positions(MASK, P, Q, "aligned")
    assert where(raw[0]) == where(raw[1]) == [1, 2, 3]
    assert where(aq[0]) == [8, 9] and where(aq[1]) == [5, 6]


def test_mask_positions_and_gather_select_in_order():
    _, aq = bridge_positions(MASK, P, Q, "shifted")
    index = mask_positions(aq, Q)
    assert index.tolist() == [where(aq[0]), where(aq[1])]
    hidden = torch.arange(2 * 10 * 3, dtype=torch.float32).reshape(2, 10, 3)
    assert torch.equal(gather_tokens(hidden, index), hidden[aq].reshape(2, Q, 3))


@pytest.mark.parametrize(
    "mask",
    [torch.tensor([[0, 1, 1, 1]], dtype=torch.bool), torch.tensor([[1, 1, 0, 0]], dtype=torch.bool)],
)
def test_bad_masks_are_refused(mask):
    with pytest.raises(ValueError, match="right-padded"):
        bridge_positions(mask, P, Q)


def test_action_queries_replace_placeholder_embeddings(tiny_policy, tiny_batch):
    vla = tiny_policy.vla
    torch.nn.init.normal_(vla.action_queries.weight)
    embeds, mask = vla.multimodal_inputs(
        tiny_batch["pixel_values"], tiny_batch["input_ids"], tiny_batch["attention_mask"]
    )
    num_patches = vla.num_patches(tiny_batch["pixel_values"])
    assert num_patches == 2 * 16
    _, placeholders = bridge_positions(
        tiny_batch["attention_mask"], num_patches, vla.config.num_action_queries, "aligned"
    )
    for row in range(embeds.shape[0]):
        torch.testing.assert_close(embeds[row][placeholders[row]], vla.action_queries.weight, rtol=0, atol=0)
        first = vla.language_model.get_input_embeddings()(tiny_batch["input_ids"][row, :1])
        torch.testing.assert_close(embeds[row, :1], first, rtol=0, atol=0)
    assert bool(mask[:, 1 : num_patches + 1].all())
    assert mask.sum(1).tolist() == (tiny_batch["attention_mask"].sum(1) + num_patches).tolist()
