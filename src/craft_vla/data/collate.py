"""Collation of per-sample dicts into the training batch of docs/interfaces.md."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class VLACollator:
    """Stack samples; right-pad `input_ids` with `pad_token_id` and build a bool `attention_mask`.

    Output: pixel_values (B, 6·I, H, W), input_ids (B, S) int64, attention_mask (B, S) bool,
    proprio (B, P), actions (B, T, A), sample_id (B,) int64. String fields (instruction,
    dataset_name) are kept as lists only with `keep_text`.
    """

    pad_token_id: int
    keep_text: bool = False

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        lengths = [len(s["input_ids"]) for s in samples]
        input_ids = torch.full((len(samples), max(lengths)), self.pad_token_id, dtype=torch.int64)
        attention_mask = torch.zeros(input_ids.shape, dtype=torch.bool)
        for row, (sample, length) in enumerate(zip(samples, lengths)):
            input_ids[row, :length] = sample["input_ids"]
            attention_mask[row, :length] = True
        batch: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        for key, value in samples[0].items():
            if key == "input_ids":
                continue
            if isinstance(value, torch.Tensor):
                batch[key] = torch.stack([s[key] for s in samples])
            elif self.keep_text:
                batch[key] = [s[key] for s in samples]
        return batch
