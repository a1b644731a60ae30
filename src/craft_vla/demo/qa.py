"""Perception questions put to the VLM and answered through its LM head (pretraining and retention).

The QA sequence is [<|im_start|>, patches, question words, answer tokens but the last]. Its first token
and patches are those of the VLA sequence, so under causal attention the patch states are exactly the
ones the action pass reads. The question ends with its argument, right before the answer (DEMO_NOTES:
without this pretraining sits at chance). Answer token k is predicted at the position before it
(next-token, teacher-forced); cell answers such as "b3" are two word tokens ("b", "3").

An answer counts as correct when at every answer token the LM head's argmax over the tokens that can
continue some answer of the answer vocabulary (given the true prefix) is the true token: exactly greedy
decoding restricted to the answer vocabulary, computed in one forward.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from craft_vla.data.image import build_pixel_values
from craft_vla.data.tokenizers import WordTokenizer
from craft_vla.models.bridge import insert_patches
from craft_vla.models.llm import decoder_hidden_states
from craft_vla.models.vlm import VLM
from craft_vla.sim import PerceptionSet, Question, answer_vocabulary

IGNORE = -100
FIRST_TOKEN = "<|im_start|>"


class AnswerSet:
    """The answer vocabulary as token sequences, and which tokens may follow a given answer prefix."""

    def __init__(self, tokenizer: WordTokenizer, answers: Sequence[str] | None = None) -> None:
        answers = answer_vocabulary() if answers is None else answers
        self.tokens = {a: tuple(tokenizer.encode(a)) for a in answers}
        unknown = [a for a, ids in self.tokens.items() if not ids or tokenizer.unk_token_id in ids]
        if unknown:
            raise ValueError(f"answers {unknown} are not in the tokenizer's vocabulary: build it from sim.vocabulary()")
        prefixes = [a for a, ids in self.tokens.items() for b, other in self.tokens.items()
                    if a != b and other[: len(ids)] == ids]
        if prefixes:
            raise ValueError(f"answers {prefixes} are token prefixes of other answers: an answer must end unambiguously")
        self.max_length = max(len(ids) for ids in self.tokens.values())
        self.continuations: dict[tuple[int, ...], set[int]] = {}
        for ids in self.tokens.values():
            for k in range(len(ids)):
                self.continuations.setdefault(ids[:k], set()).add(ids[k])

    def allowed_mask(self, answer_ids: Sequence[int], vocab_size: int) -> Tensor:
        """(max_length, V) bool: row k marks the tokens that can follow `answer_ids[:k]` (rows past the answer: none)."""
        mask = torch.zeros(self.max_length, vocab_size, dtype=torch.bool)
        for k in range(len(answer_ids)):
            mask[k, sorted(self.continuations[tuple(answer_ids[:k])])] = True
        return mask


def scene_pixel_values(perception: PerceptionSet, scenes: Sequence[int], image_size: int) -> Tensor:
    """(B, 12, H, W): third-person then wrist image of each scene, preprocessed as the VLA's inference input."""
    return torch.stack(
        [build_pixel_values([perception.images[i], perception.wrist_images[i]], image_size) for i in scenes]
    )


def question_batch(
    perception: PerceptionSet,
    pairs: Sequence[tuple[int, Question]],
    tokenizer: WordTokenizer,
    answers: AnswerSet,
    image_size: int,
    num_patches: int,
    vocab_size: int,
) -> dict[str, Tensor]:
    """Collate (scene index, question) pairs.

    pixel_values (B, 12, H, W); input_ids, attention_mask (B, S), right-padded; answer_ids (B, K) with
    IGNORE past each answer; answer_positions (B, K) where each answer token is predicted in the
    multimodal sequence of length S + num_patches; allowed (B, K, V); scene (B,) scene indices.
    """
    first = tokenizer.token_id(FIRST_TOKEN)
    rows, answer_rows, positions, allowed = [], [], [], []
    for _, question in pairs:
        question_ids, answer_ids = tokenizer.encode(question.text), list(answers.tokens[question.answer])
        rows.append([first, *question_ids, *answer_ids[:-1]])
        pad = answers.max_length - len(answer_ids)
        answer_rows.append(answer_ids + [IGNORE] * pad)
        start = num_patches + len(question_ids)  # the last question token, after the first token and the patches
        positions.append([start + k for k in range(len(answer_ids))] + [0] * pad)
        allowed.append(answers.allowed_mask(answer_ids, vocab_size))
    length = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), length), tokenizer.pad_token_id, dtype=torch.int64)
    attention_mask = torch.zeros(input_ids.shape, dtype=torch.bool)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention_mask[i, : len(row)] = True
    scenes = [scene for scene, _ in pairs]
    return {
        "pixel_values": scene_pixel_values(perception, scenes, image_size),
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "answer_ids": torch.tensor(answer_rows, dtype=torch.int64),
        "answer_positions": torch.tensor(positions, dtype=torch.int64),
        "allowed": torch.stack(allowed),
        "scene": torch.tensor(scenes, dtype=torch.int64),
    }


def qa_hidden_states(vlm: VLM, batch: dict[str, Tensor]) -> tuple[Tensor, ...]:
    """Hidden states of [first token, patches, text] (no action queries), index i = layer i, each (B, S + P, D)."""
    language_model = vlm.language_model
    embeds = language_model.get_input_embeddings()(batch["input_ids"])
    patches = vlm.projector(vlm.vision_backbone(batch["pixel_values"])).to(embeds.dtype)
    mask = insert_patches(batch["attention_mask"], batch["attention_mask"].new_ones(patches.shape[:2]))
    return decoder_hidden_states(language_model, insert_patches(embeds, patches), mask, vlm.num_layers)


def answer_logits(vlm: VLM, last_hidden: Tensor, positions: Tensor) -> Tensor:
    """LM-head logits (B, K, V) at the answer positions (B, K) of the final hidden states (B, S, D)."""
    states = last_hidden.gather(1, positions.unsqueeze(-1).expand(-1, -1, last_hidden.shape[-1]))
    return vlm.language_model.lm_head(states).float()


def answer_loss(logits: Tensor, answer_ids: Tensor) -> Tensor:
    """Next-token cross-entropy over the answer tokens (padding ignored)."""
    return F.cross_entropy(logits.flatten(0, 1), answer_ids.flatten(), ignore_index=IGNORE)


def answers_correct(logits: Tensor, answer_ids: Tensor, allowed: Tensor) -> Tensor:
    """(B,) bool: restricted greedy decoding gives the whole answer (see the module docstring)."""
    predicted = logits.masked_fill(~allowed, float("-inf")).argmax(dim=-1)
    return ((predicted == answer_ids) | (answer_ids == IGNORE)).all(dim=1)
