"""Retention metrics: what a fine-tuned VLA still knows of the scenes its pretrained snapshot knew.

- `qa_accuracy`: perception questions answered by the LM head (see `qa.py` for how an answer is read).
- `linear_probe`: a ridge-regression read-out of dense per-cell labels from the bridge (anchor) features.
- `feature_drift`: per LLM layer, the distance and linear CKA between the snapshot's and the model's
  mean-pooled bridge conditions C_R and C_AQ.

Every metric takes a `VLAAdapterPolicy` (`qa_accuracy` also a bare VLM) whose VLM may be wrapped by peft
LoRA (the adapters are then active), runs it in eval mode without gradients, in batches, and restores its
mode afterwards.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from craft_vla.craft import AnchorSpec, pool_tokens
from craft_vla.data.prompt import prompt_token_ids
from craft_vla.data.tokenizers import WordTokenizer
from craft_vla.demo.qa import (
    AnswerSet,
    answer_logits,
    answers_correct,
    qa_hidden_states,
    question_batch,
    scene_pixel_values,
)
from craft_vla.models.policy import VLAAdapterPolicy, unwrap_vlm
from craft_vla.models.vlm import VLM
from craft_vla.sim import PerceptionSet
from craft_vla.sim.attributes import COLOURS, MATERIALS, SHAPES, SIZES

Batch = dict[str, Tensor]
EMPTY_CELL = {"colour": len(COLOURS), "shape": len(SHAPES), "size": len(SIZES), "material": len(MATERIALS)}
PROBE_INSTRUCTION = ""  # the probe's VLA prompt names no task: "What action should the robot take to ?"


def as_vlm(model: nn.Module) -> VLM:
    """The VLM of a policy or of a (peft-wrapped) VLM."""
    return unwrap_vlm(model.vla if isinstance(model, VLAAdapterPolicy) else model)


@contextlib.contextmanager
def evaluating(*modules: nn.Module) -> Iterator[None]:
    """Eval mode and no gradients inside; each module's training flag restored on exit."""
    modes = [m.training for m in modules]
    try:
        for m in modules:
            m.eval()
        with torch.no_grad():
            yield
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


def qa_accuracy(
    model: nn.Module,
    perception: PerceptionSet,
    tokenizer: WordTokenizer,
    batch_size: int = 256,
    answers: AnswerSet | None = None,
) -> dict[str, float]:
    """Accuracy of the LM head's answers, restricted-greedy over the answer vocabulary (`qa.py`).

    Keys: "overall", "task_relevant", "task_irrelevant" (questions the manipulation tasks do not need),
    "category/<name>" for each category asked, and "num_questions".
    """
    answers = answers or AnswerSet(tokenizer)
    vlm = as_vlm(model)
    config = vlm.config
    pairs = perception.flat()
    scenes_per_batch = max(1, batch_size // max(len(qs) for qs in perception.questions))
    correct = []
    with evaluating(model):
        for start in range(0, len(perception), scenes_per_batch):
            # a scene's questions packed in one row: each computes what it would alone (qa.py), the image once
            rows = [
                (i, perception.questions[i])
                for i in range(start, min(start + scenes_per_batch, len(perception)))
            ]
            batch = question_batch(
                perception,
                rows,
                tokenizer,
                answers,
                config.image_size,
                config.num_patches,
                config.llm.vocab_size,
            )
            hidden = qa_hidden_states(vlm, batch)
            logits = answer_logits(vlm, hidden[-1], batch["answer_positions"])
            ok = answers_correct(logits, batch["answer_ids"], batch["allowed"])
            correct.extend(
                flag for row, (_, questions) in enumerate(rows) for flag in ok[row, : len(questions)].tolist()
            )
    groups: dict[str, list[bool]] = defaultdict(list)
    for (_, question), ok in zip(pairs, correct):
        groups["overall"].append(ok)
        groups["task_relevant" if question.task_relevant else "task_irrelevant"].append(ok)
        groups[f"category/{question.category}"].append(ok)
    result = {name: float(np.mean(values)) for name, values in sorted(groups.items())}
    result["num_questions"] = float(len(pairs))
    return result


def probe_batches(
    perception: PerceptionSet,
    tokenizer: WordTokenizer,
    num_action_queries: int,
    image_size: int,
    batch_size: int = 128,
    instruction: str = PROBE_INSTRUCTION,
) -> Iterator[Batch]:
    """VLA batches of the perception scenes, all with the prompt of `instruction`
    (pixel_values, input_ids, mask)."""
    ids = torch.tensor(prompt_token_ids(instruction, tokenizer, num_action_queries))
    for start in range(0, len(perception), batch_size):
        scenes = np.arange(start, min(start + batch_size, len(perception)))
        yield {
            "pixel_values": scene_pixel_values(perception, scenes, image_size),
            "input_ids": ids.expand(len(scenes), -1).clone(),
            "attention_mask": torch.ones(len(scenes), len(ids), dtype=torch.bool),
        }


def anchor_features_of(policy: VLAAdapterPolicy, batches: Iterable[Batch], spec: AnchorSpec) -> Tensor:
    """The anchor features (N, F) of every batch, through the policy's own anchor pass, float32."""
    with evaluating(policy):
        return torch.cat([policy(batch, anchor_spec=spec).float() for batch in batches])


def ridge_fit_predict(train_x: Tensor, train_y: Tensor, test_x: Tensor, ridge: float) -> Tensor:
    """Closed-form ridge regression in float64: fit (N, F) -> (N, K) on standardised features, predict (M, K).

    Minimises ||X W + b - Y||² / N + ridge ||W||² (the bias is not penalised). A feature constant on the
    training set gets weight 0, whatever its value at test time.
    """
    x, y, test = train_x.double(), train_y.double(), test_x.double()
    mean, std = x.mean(0), x.std(0)
    std = torch.where(std > 1e-12 * std.max().clamp_min(1e-300), std, torch.ones_like(std))
    x, test = (x - mean) / std, (test - mean) / std
    y_mean = y.mean(0)
    gram = x.T @ x / len(x) + ridge * torch.eye(x.shape[1], dtype=x.dtype)
    weights = torch.linalg.solve(gram, x.T @ (y - y_mean) / len(x))
    return test @ weights + y_mean


def linear_probe(
    policy: VLAAdapterPolicy,
    train: PerceptionSet,
    heldout: PerceptionSet,
    tokenizer: WordTokenizer,
    spec: AnchorSpec | None = None,
    attribute: str = "colour",
    ridge: float = 1e-3,
    instruction: str = PROBE_INSTRUCTION,
    batch_size: int = 128,
) -> dict[str, float]:
    """Read the dense label `attribute` of every grid cell from the anchor features with one linear map.

    Features: `policy(batch, anchor_spec=spec)` (default m = L/2, M = L, mean pooling, both parts) of each
    scene under the prompt of `instruction`; targets: one-hot labels of each of the G² cells, fitted by
    closed-form ridge regression on `train`, scored on `heldout`. Keys: "accuracy" over all cells,
    "occupied_accuracy" over cells holding an object (object attributes only), "majority_baseline".
    """
    config = policy.config
    layers = config.llm.num_hidden_layers
    spec = spec or AnchorSpec(layers // 2, layers)
    if attribute not in train.labels:
        raise ValueError(f"no dense label {attribute!r}: the perception set has {sorted(train.labels)}")
    features = [
        anchor_features_of(
            policy,
            probe_batches(
                s, tokenizer, config.num_action_queries, config.image_size, batch_size, instruction
            ),
            spec,
        )
        for s in (train, heldout)
    ]
    labels = [torch.from_numpy(s.labels[attribute].reshape(len(s), -1)) for s in (train, heldout)]
    classes = int(max(lab.max() for lab in labels)) + 1
    one_hot = torch.nn.functional.one_hot(labels[0], classes).flatten(1).float()  # (N, G² · C)
    scores = ridge_fit_predict(features[0], one_hot, features[1], ridge)
    predicted = scores.reshape(len(heldout), -1, classes).argmax(-1)
    target = labels[1]
    majority = torch.bincount(labels[0].flatten(), minlength=classes).argmax()
    result = {
        "accuracy": float((predicted == target).double().mean()),
        "majority_baseline": float((target == majority).double().mean()),
    }
    if attribute in EMPTY_CELL:
        occupied = target != EMPTY_CELL[attribute]
        result["occupied_accuracy"] = float((predicted == target)[occupied].double().mean())
    return result


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA of two representations (N, D1), (N, D2) of the same N samples, in float64.

    CKA = ||Yc^T Xc||_F² / (||Xc^T Xc||_F ||Yc^T Yc||_F) with column-centred Xc, Yc (Kornblith et al. 2019):
    1 for identical representations, invariant to orthogonal maps, isotropic scaling and translation.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA compares the same samples: got {x.shape[0]} and {y.shape[0]} rows")
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    cross = torch.linalg.matrix_norm(y.T @ x) ** 2
    norm = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    return float(cross / norm) if norm > 0 else float("nan")


def pooled_bridge_conditions(policy: VLAAdapterPolicy, batch: Batch) -> tuple[list[Tensor], list[Tensor]]:
    """Mean-pooled C_R and C_AQ of every layer 0..L: two lists of L + 1 tensors (B, D), float32."""
    vlm = as_vlm(policy)
    hidden = vlm.hidden_states(batch)
    raw_mask, aq_mask = policy.bridge_positions(
        batch["attention_mask"], vlm.num_patches(batch["pixel_values"])
    )
    return [pool_tokens(h, raw_mask) for h in hidden], [pool_tokens(h, aq_mask) for h in hidden]


def feature_drift(
    snapshot: VLAAdapterPolicy, policy: VLAAdapterPolicy, batches: Iterable[Batch]
) -> dict[str, list[float]]:
    """Per LLM layer 0..L, how far the fine-tuned `policy`'s bridge conditions moved from the `snapshot`'s.

    For the mean-pooled raw latent ("raw") and action-query latent ("aq") of each layer: "<part>_l2", the
    mean over samples of ||f_policy - f_snapshot||²; "<part>_relative_l2", that divided by the snapshot's
    spread S = mean ||f_snapshot - mean f_snapshot||² (the unit of CRaFT's relative ε); "<part>_cka",
    linear CKA between the two. Each key maps to a list indexed by layer (index 0: the LLM's input).
    """
    collected: dict[str, list[list[Tensor]]] = defaultdict(list)
    with evaluating(snapshot, policy):
        for batch in batches:
            for who, model in (("snapshot", snapshot), ("policy", policy)):
                raw, aq = pooled_bridge_conditions(model, batch)
                collected[f"{who}/raw"].append(raw)
                collected[f"{who}/aq"].append(aq)
    if not collected:
        raise ValueError("feature_drift needs at least one batch")
    result: dict[str, list[float]] = {}
    for part in ("raw", "aq"):
        before = [torch.cat(layer).double() for layer in zip(*collected[f"snapshot/{part}"])]
        after = [torch.cat(layer).double() for layer in zip(*collected[f"policy/{part}"])]
        l2 = [float(((b - a) ** 2).sum(1).mean()) for b, a in zip(before, after)]
        spread = [float(((b - b.mean(0)) ** 2).sum(1).mean()) for b in before]
        result[f"{part}_l2"] = l2
        result[f"{part}_relative_l2"] = [d / s if s > 0 else float("nan") for d, s in zip(l2, spread)]
        result[f"{part}_cka"] = [linear_cka(b, a) for b, a in zip(before, after)]
    return result
