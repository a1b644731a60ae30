"""Perception questions put to the VLM and answered through its LM head (pretraining and retention).

A question's sequence is [<|im_start|>, patches, question words, answer tokens but the last]. Its first
token and patches are those of the VLA sequence, so under causal attention the patch states are exactly
the ones the action pass reads. The question ends with its argument, right before the answer (DEMO_NOTES:
without this pretraining sits at chance). Answer token k is predicted at the position before it
(next-token, teacher-forced).

Several questions about one scene are packed into one row: [<|im_start|>, patches, question 1 + answer,
question 2 + answer, ...], where a block mask lets each question see only the image prefix and itself and
its positions restart after the prefix, so each computes exactly what it would alone while the image is
encoded once. Evaluation packs them the same way.

An answer counts as correct when at every answer token the LM head's argmax over the tokens that can
continue some answer of the answer vocabulary (given the true prefix) is the true token: exactly greedy
decoding restricted to the answer vocabulary, computed in one forward.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import Tensor

from craft_vla.data.image import ImageNormalization
from craft_vla.data.tokenizers import WordTokenizer
from craft_vla.models.bridge import insert_patches
from craft_vla.models.vlm import VLM
from craft_vla.sim import PerceptionSet, Question, answer_vocabulary

IGNORE = -100
FIRST_TOKEN = "<|im_start|>"
PREFIX, PADDING = 0, -1  # segment ids of the image prefix and of padding; questions are 1, 2, ...


class AnswerSet:
    """The answer vocabulary as token sequences, and which tokens may follow a given answer prefix."""

    def __init__(self, tokenizer: WordTokenizer, answers: Sequence[str] | None = None) -> None:
        answers = answer_vocabulary() if answers is None else answers
        self.tokens = {a: tuple(tokenizer.encode(a)) for a in answers}
        unknown = [a for a, ids in self.tokens.items() if not ids or tokenizer.unk_token_id in ids]
        if unknown:
            raise ValueError(
                f"answers {unknown} are not in the tokenizer's vocabulary: build it from sim.vocabulary()"
            )
        prefixes = [
            a
            for a, ids in self.tokens.items()
            for b, other in self.tokens.items()
            if a != b and other[: len(ids)] == ids
        ]
        if prefixes:
            raise ValueError(
                f"answers {prefixes} are token prefixes of other answers: an answer must end unambiguously"
            )
        self.max_length = max(len(ids) for ids in self.tokens.values())
        self.continuations: dict[tuple[int, ...], set[int]] = {}
        for ids in self.tokens.values():
            for k in range(len(ids)):
                self.continuations.setdefault(ids[:k], set()).add(ids[k])

    def allowed_mask(self, answer_ids: Sequence[int], vocab_size: int) -> Tensor:
        """(max_length, V) bool: row k marks the tokens that can follow `answer_ids[:k]`
        (rows past the answer: none)."""
        mask = torch.zeros(self.max_length, vocab_size, dtype=torch.bool)
        for k in range(len(answer_ids)):
            mask[k, sorted(self.continuations[tuple(answer_ids[:k])])] = True
        return mask


def scene_pixel_values(perception: PerceptionSet, scenes: Sequence[int], image_size: int) -> Tensor:
    """(B, 12, H, W): third-person then wrist image of each scene, normalised as `build_pixel_values` does.

    Batched (no resize, no crop), so a training step does not wait for per-image preprocessing.
    """
    views = np.stack([perception.images[scenes], perception.wrist_images[scenes]], axis=1)  # (B, 2, H, W, 3)
    if views.shape[2:4] != (image_size, image_size):
        raise ValueError(
            f"the perception images are {views.shape[2]}x{views.shape[3]} px but the model takes "
            f"{image_size} px: make the perception set with image_size={image_size}"
        )
    pixels = torch.from_numpy(views).permute(0, 1, 4, 2, 3).float() / 255  # (B, 2, 3, H, W)
    norm = ImageNormalization()
    dino = TF.normalize(pixels, list(norm.dino_mean), list(norm.dino_std))
    siglip = TF.normalize(pixels, list(norm.siglip_mean), list(norm.siglip_std))
    return torch.cat([dino, siglip], dim=2).flatten(1, 2)


def _pad(rows: list[list], value, dtype: torch.dtype = torch.int64) -> Tensor:
    """Right-pad nested lists to a rectangle: rows of equal-shaped items (B, N, ...)."""
    length = max(len(r) for r in rows)
    item = next(x for r in rows for x in r)
    out = torch.full((len(rows), length, *np.shape(item)), value, dtype=dtype)
    for i, row in enumerate(rows):
        if row:
            out[i, : len(row)] = torch.as_tensor(np.asarray(row)).to(dtype)
    return out


def question_batch(
    perception: PerceptionSet,
    rows: Sequence[tuple[int, Sequence[Question]]],
    tokenizer: WordTokenizer,
    answers: AnswerSet,
    image_size: int,
    num_patches: int,
    vocab_size: int,
) -> dict[str, Tensor]:
    """Collate rows of (scene index, its questions), the questions packed after the image.

    pixel_values (B, 12, H, W); input_ids (B, S) right-padded; segment (B, S): PREFIX for the first token,
    question j (1-based) for its tokens, PADDING after; for the N questions of a row and K answer tokens:
    answer_ids (B, N, K) with IGNORE past each answer and for missing questions, answer_positions (B, N, K)
    in the multimodal sequence of length S + num_patches, allowed (B, N, K, V), question_mask (B, N);
    scene (B,).
    """
    first = tokenizer.token_id(FIRST_TOKEN)
    ids, segments, answer_ids, positions, allowed = [], [], [], [], []
    pad = [IGNORE] * answers.max_length
    for _, questions in rows:
        row, segment, row_answers, row_positions, row_allowed = [first], [PREFIX], [], [], []
        for j, question in enumerate(questions, start=1):
            text, answer = tokenizer.encode(question.text), list(answers.tokens[question.answer])
            last = (
                num_patches + len(row) + len(text) - 1
            )  # the question's last token in the multimodal sequence
            row += [*text, *answer[:-1]]
            segment += [j] * (len(text) + len(answer) - 1)
            row_answers.append((answer + pad)[: answers.max_length])
            row_positions.append([last + k if k < len(answer) else 0 for k in range(answers.max_length)])
            row_allowed.append(answers.allowed_mask(answer, vocab_size).numpy())
        ids.append(row)
        segments.append(segment)
        answer_ids.append(row_answers)
        positions.append(row_positions)
        allowed.append(row_allowed)
    answer_ids_t = _pad(answer_ids, IGNORE)
    scenes = np.asarray([scene for scene, _ in rows], dtype=np.int64)
    return {
        "pixel_values": scene_pixel_values(perception, scenes, image_size),
        "input_ids": _pad(ids, tokenizer.pad_token_id),
        "segment": _pad(segments, PADDING),
        "answer_ids": answer_ids_t,
        "answer_positions": _pad(positions, 0),
        "allowed": _pad(allowed, False, torch.bool),
        "question_mask": (answer_ids_t != IGNORE).any(-1),
        "scene": torch.from_numpy(scenes),
    }


def packed_attention(segment: Tensor, num_patches: int) -> tuple[Tensor, Tensor]:
    """The block mask (B, 1, T, T) bool and position ids (B, T) of packed rows, T = S + num_patches.

    A token sees the earlier tokens of the image prefix and of its own question; positions count up through
    the prefix and restart after it for every question. Padding sees the first token only.
    """
    prefix = segment.new_full((segment.shape[0], num_patches), PREFIX)
    segment = insert_patches(segment, prefix)  # (B, T)
    length = segment.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    same = segment.unsqueeze(2) == segment.unsqueeze(1)
    visible = (segment.unsqueeze(1) == PREFIX) | (same & (segment.unsqueeze(2) != PADDING))
    mask = causal & visible
    mask[:, :, 0] = True
    index = torch.arange(length).expand_as(segment)
    in_question = segment > PREFIX
    previous = F.pad(segment, (1, 0), value=PREFIX)[:, :-1]
    start = torch.where(in_question & (segment != previous), index, 0).cummax(dim=1).values
    positions = torch.where(in_question, num_patches + 1 + index - start, index)
    return mask.unsqueeze(1), positions


def qa_hidden_states(vlm: VLM, batch: dict[str, Tensor]) -> tuple[Tensor, ...]:
    """Hidden states of the packed rows [first token, patches, questions] (no action queries),
    index i = layer i (the last after the final norm), each (B, S + P, D)."""
    language_model = vlm.language_model
    decoder = language_model.model
    embeds = language_model.get_input_embeddings()(batch["input_ids"])
    patches = vlm.projector(vlm.vision_backbone(batch["pixel_values"])).to(embeds.dtype)
    hidden = insert_patches(embeds, patches)
    visible, position_ids = packed_attention(batch["segment"], patches.shape[1])
    # additive (0 / -inf-like), the one mask form that both SDPA and matmul attention
    # (`models.attention`) read
    mask = torch.zeros(visible.shape, dtype=hidden.dtype, device=hidden.device).masked_fill(
        ~visible, torch.finfo(hidden.dtype).min
    )
    rotary = decoder.rotary_emb(hidden, position_ids)
    states = [hidden]
    for layer in decoder.layers:
        hidden = layer(hidden, attention_mask=mask, position_ids=position_ids, position_embeddings=rotary)
        states.append(hidden)
    states[-1] = decoder.norm(hidden)
    return tuple(states)


def answer_logits(vlm: VLM, last_hidden: Tensor, positions: Tensor) -> Tensor:
    """LM-head logits (B, N, K, V) at the answer positions (B, N, K) of the final hidden states (B, T, D)."""
    flat = positions.flatten(1)
    states = last_hidden.gather(1, flat.unsqueeze(-1).expand(-1, -1, last_hidden.shape[-1]))
    return vlm.language_model.lm_head(states).float().unflatten(1, positions.shape[1:])


def answer_loss(logits: Tensor, answer_ids: Tensor) -> Tensor:
    """Next-token cross-entropy over all answer tokens (padding ignored)."""
    return F.cross_entropy(logits.flatten(0, -2), answer_ids.flatten(), ignore_index=IGNORE)


def answers_correct(logits: Tensor, answer_ids: Tensor, allowed: Tensor) -> Tensor:
    """(B, N) bool: restricted greedy decoding gives the whole answer (see the module docstring)."""
    predicted = logits.masked_fill(~allowed, float("-inf")).argmax(dim=-1)
    return ((predicted == answer_ids) | (answer_ids == IGNORE)).all(dim=-1)
