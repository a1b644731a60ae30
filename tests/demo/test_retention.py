"""Retention metrics: QA accuracy aggregation, the linear probe's ridge fit, linear CKA, feature drift."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from craft_vla.demo import retention
from craft_vla.demo.qa import IGNORE
from craft_vla.demo.retention import (
    feature_drift,
    linear_cka,
    linear_probe,
    probe_batches,
    qa_accuracy,
    ridge_fit_predict,
)
from craft_vla.models import apply_lora
from craft_vla.sim.attributes import MATERIALS, SIZES


def stub_lm_head(monkeypatch, wrong_answers: set[int]):
    """Make the LM head an oracle that answers every question right, except those whose first answer token
    is in `wrong_answers` (answered with token 0 instead)."""
    seen = {}
    real_batch = retention.question_batch

    def remember(*args, **kwargs):
        seen["batch"] = real_batch(*args, **kwargs)
        return seen["batch"]

    def oracle(vlm, last_hidden, positions):
        answer_ids = seen["batch"]["answer_ids"]  # (B, N, K): N questions packed per row
        target = answer_ids.clamp_min(0)
        wrong = torch.isin(answer_ids[..., 0], torch.tensor(sorted(wrong_answers), dtype=answer_ids.dtype))
        target[..., 0][wrong] = 0
        return torch.nn.functional.one_hot(target, vlm.config.llm.vocab_size).float() * 10

    monkeypatch.setattr(retention, "question_batch", remember)
    monkeypatch.setattr(retention, "answer_logits", oracle)


def test_qa_accuracy_is_one_for_an_oracle(monkeypatch, policy, scenes, tokenizer):
    stub_lm_head(monkeypatch, wrong_answers=set())
    result = qa_accuracy(policy, scenes, tokenizer, batch_size=16)
    assert result["overall"] == result["task_relevant"] == result["task_irrelevant"] == 1.0
    assert result["num_questions"] == len(scenes.flat()) == 72
    assert all(v == 1.0 for k, v in result.items() if k.startswith("category/"))


def test_qa_accuracy_splits_by_category_and_task_relevance(monkeypatch, policy, scenes, tokenizer):
    wrong_words = {*SIZES, *MATERIALS}
    stub_lm_head(monkeypatch, wrong_answers={tokenizer.token_id(w) for w in wrong_words})
    result = qa_accuracy(policy, scenes, tokenizer, batch_size=16)
    questions = [q for _, q in scenes.flat()]
    right = [q.answer not in wrong_words for q in questions]
    assert result["overall"] == pytest.approx(np.mean(right))
    assert result["task_relevant"] == 1.0  # size and material questions are never task-relevant
    irrelevant = [ok for ok, q in zip(right, questions) if not q.task_relevant]
    assert result["task_irrelevant"] == pytest.approx(np.mean(irrelevant)) and result["task_irrelevant"] < 1
    for name in ("size_at", "material_at", "size_of", "material_of"):
        assert result.get(f"category/{name}", 0.0) == 0.0
    assert IGNORE < 0


def test_qa_accuracy_packs_a_scene_s_questions_without_changing_an_answer(scenes, tokenizer):
    from craft_vla.demo.pretrain import PretrainConfig, pretrain
    from craft_vla.demo.qa import AnswerSet, answer_logits, answers_correct, qa_hidden_states, question_batch

    # a briefly pretrained VLM: it answers some questions right and some wrong, so the comparison can fail
    vlm, _, _ = pretrain(
        PretrainConfig(
            steps=40,
            batch_size=8,
            warmup_steps=5,
            train_scenes=40,
            heldout_scenes=2,
            heldout_questions_per_scene=1,
        ),
        progress=False,
    )
    answers, config = AnswerSet(tokenizer), vlm.config
    flags = []
    with torch.no_grad():
        for scene, question in scenes.flat():  # the reference: each question alone in its row
            batch = question_batch(
                scenes,
                [(scene, [question])],
                tokenizer,
                answers,
                config.image_size,
                config.num_patches,
                config.llm.vocab_size,
            )
            logits = answer_logits(vlm, qa_hidden_states(vlm, batch)[-1], batch["answer_positions"])
            flags.append(bool(answers_correct(logits, batch["answer_ids"], batch["allowed"])[0, 0]))
    result = qa_accuracy(vlm, scenes, tokenizer, batch_size=24)
    assert 0 < np.mean(flags) < 1
    assert result["overall"] == pytest.approx(np.mean(flags))
    for category in {q.category for _, q in scenes.flat()}:
        chosen = [ok for ok, (_, q) in zip(flags, scenes.flat()) if q.category == category]
        assert result[f"category/{category}"] == pytest.approx(np.mean(chosen)), category


def test_qa_accuracy_of_a_random_model_is_near_chance(policy, config, tokenizer):
    from craft_vla.sim import make_perception_set

    heldout = make_perception_set(40, 8, seed=5, name="test-chance")
    result = qa_accuracy(policy, heldout, tokenizer, batch_size=160)
    assert result["overall"] < 0.3
    assert result["num_questions"] == 320
    policy.train()
    again = qa_accuracy(policy, heldout, tokenizer, batch_size=64)  # batching does not change answers
    assert again == result and policy.training


def test_qa_accuracy_through_lora_equals_the_base_model_at_init(policy, scenes, tokenizer):
    with torch.no_grad():
        for p in policy.vla.language_model.parameters():
            p.add_(0.02 * torch.randn_like(p))  # leave the random model's exact ties behind
    base = qa_accuracy(policy, scenes, tokenizer)
    apply_lora(policy, rank=4)
    assert qa_accuracy(policy, scenes, tokenizer) == base


def test_ridge_fit_matches_least_squares_on_augmented_rows():
    g = torch.Generator().manual_seed(0)
    x, y, test = (
        torch.randn(50, 6, generator=g) * 3 + 1,
        torch.randn(50, 4, generator=g),
        torch.randn(7, 6, generator=g),
    )
    ridge = 0.1
    predicted = ridge_fit_predict(x, y, test, ridge)
    # reference: standardise, append sqrt(N·ridge)·I rows (penalising only the weights) to an lstsq
    mean, std = x.double().mean(0), x.double().std(0)
    xs = (x.double() - mean) / std
    design = torch.cat([torch.ones(50, 1, dtype=torch.float64), xs], 1)
    penalty = torch.cat(
        [torch.zeros(6, 1, dtype=torch.float64), (50 * ridge) ** 0.5 * torch.eye(6, dtype=torch.float64)], 1
    )
    solution = torch.linalg.lstsq(
        torch.cat([design, penalty]), torch.cat([y.double(), torch.zeros(6, 4, dtype=torch.float64)])
    ).solution
    expected = torch.cat([torch.ones(7, 1, dtype=torch.float64), (test.double() - mean) / std], 1) @ solution
    torch.testing.assert_close(predicted, expected)


def test_linear_probe_reads_labels_from_features_that_hold_them(monkeypatch, policy, tokenizer):
    from craft_vla.sim import make_perception_set

    train, heldout = (
        make_perception_set(300, 1, seed=1, name="probe-a"),
        make_perception_set(10, 1, seed=1, name="probe-b"),
    )

    batch_counts = []

    def label_features(
        model, batches, spec
    ):  # one-hot colours of all cells: a perfect linear read-out exists
        chosen = (train, heldout)[len(batch_counts)]
        batch_counts.append(sum(1 for _ in batches))
        assert (spec.raw_layer, spec.aq_layer) == (2, 4)
        labels = torch.from_numpy(chosen.labels["colour"].reshape(len(chosen), -1))
        return torch.nn.functional.one_hot(labels, 7).flatten(1).float()

    monkeypatch.setattr(retention, "anchor_features_of", label_features)
    result = linear_probe(policy, train, heldout, tokenizer, batch_size=16)
    assert result["accuracy"] == 1.0 and result["occupied_accuracy"] == 1.0
    assert batch_counts == [19, 1]
    assert 0.5 < result["majority_baseline"] < 1.0


def test_linear_probe_runs_on_the_anchor_features(policy, tokenizer):
    from craft_vla.sim import make_perception_set

    train, heldout = (
        make_perception_set(24, 1, seed=1, name="probe-a"),
        make_perception_set(8, 1, seed=1, name="probe-b"),
    )
    result = linear_probe(policy, train, heldout, tokenizer, attribute="shape")
    assert set(result) == {"accuracy", "majority_baseline", "occupied_accuracy"}
    assert all(0.0 <= v <= 1.0 for v in result.values())


def reference_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with linear kernels and the centring matrix H, float64."""
    x, y = x.double(), y.double()
    n = x.shape[0]
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    k, l_ = h @ x @ x.T @ h, h @ y @ y.T @ h
    return float((k * l_).sum() / torch.sqrt((k * k).sum() * (l_ * l_).sum()))


def test_linear_cka_matches_the_hsic_formula_and_its_invariances():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 8, generator=g)
    y = x @ torch.randn(8, 5, generator=g) + 0.5 * torch.randn(40, 5, generator=g)
    assert linear_cka(x, y) == pytest.approx(reference_cka(x, y), rel=1e-12)
    assert linear_cka(x, x) == pytest.approx(1.0, rel=1e-12)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))
    moved = 3.0 * (x.double() @ q) + torch.randn(1, 8, generator=g, dtype=torch.float64)
    assert linear_cka(moved, y) == pytest.approx(linear_cka(x, y), rel=1e-10)  # orthogonal, scale, shift
    unrelated = torch.randn(40, 5, generator=g)
    assert 0.0 <= linear_cka(x, unrelated) < linear_cka(x, y) <= 1.0
    with pytest.raises(ValueError, match="same samples"):
        linear_cka(x, y[:10])


def test_feature_drift_is_zero_for_identical_models(policy, config, scenes, tokenizer):
    batches = list(
        probe_batches(scenes, tokenizer, config.num_action_queries, config.image_size, batch_size=5)
    )
    drift = feature_drift(policy, copy.deepcopy(policy), batches)
    layers = config.llm.num_hidden_layers + 1
    assert set(drift) == {f"{p}_{m}" for p in ("raw", "aq") for m in ("l2", "relative_l2", "cka")}
    assert all(len(v) == layers for v in drift.values())
    assert drift["raw_l2"] == [0.0] * layers and drift["aq_l2"] == [0.0] * layers
    assert drift["raw_cka"] == pytest.approx([1.0] * layers)


def test_feature_drift_measures_the_change_of_a_perturbed_layer(policy, config, scenes, tokenizer):
    batches = list(
        probe_batches(scenes, tokenizer, config.num_action_queries, config.image_size, batch_size=5)
    )
    tuned = copy.deepcopy(policy)
    with torch.no_grad():
        tuned.vla.language_model.model.layers[2].mlp.down_proj.weight.mul_(3.0)
    drift = feature_drift(policy, tuned, batches)
    assert (
        drift["raw_l2"][:3] == [0.0] * 3 and drift["aq_l2"][:3] == [0.0] * 3
    )  # layers before it are untouched
    assert min(drift["raw_l2"][3:]) > 0 and min(drift["aq_l2"][3:]) > 0
    # reference from the action pass's own bridge latents: mean over tokens, squared
    # distance, mean over samples
    with torch.no_grad():
        policy.eval(), tuned.eval()
        batches = [{**b, "proprio": torch.zeros(len(b["input_ids"]), config.proprio_dim)} for b in batches]
        outs = [[m(b) for b in batches] for m in (policy, tuned)]
    for part, latents in (("raw", "raw_latents"), ("aq", "aq_latents")):
        for layer in (3, 4):
            before = torch.cat([getattr(o, latents)[layer].mean(1) for o in outs[0]]).double()
            after = torch.cat([getattr(o, latents)[layer].mean(1) for o in outs[1]]).double()
            expected = ((before - after) ** 2).sum(1).mean()
            assert drift[f"{part}_l2"][layer] == pytest.approx(float(expected), rel=1e-5)
            spread = ((before - before.mean(0)) ** 2).sum(1).mean()
            assert drift[f"{part}_relative_l2"][layer] == pytest.approx(float(expected / spread), rel=1e-5)
            assert drift[f"{part}_cka"][layer] == pytest.approx(reference_cka(before, after), rel=1e-5)


def test_feature_drift_of_a_fresh_lora_policy_is_zero(policy, config, scenes, tokenizer):
    batches = list(
        probe_batches(scenes, tokenizer, config.num_action_queries, config.image_size, batch_size=6)
    )
    tuned = apply_lora(copy.deepcopy(policy), rank=4)  # B = 0: the adapters start as the identity
    drift = feature_drift(policy, tuned, batches)
    assert max(drift["raw_l2"]) == 0.0 and max(drift["aq_l2"]) == 0.0
