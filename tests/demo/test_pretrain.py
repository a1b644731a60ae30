"""Pretraining the demo VLM: the QA encoding, the loss going down, the snapshot format and its cache."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from craft_vla.data.image import build_pixel_values
from craft_vla.demo import pretrain as pretrain_module
from craft_vla.demo.model import demo_config
from craft_vla.demo.pretrain import (
    PretrainConfig,
    cell_head,
    init_attention,
    load_snapshot,
    make_optimizer,
    pretrain,
    pretrain_step,
    pretrained_snapshot,
    quick_pretrain_config,
    save_snapshot,
    snapshot_key,
)
from craft_vla.demo.qa import (
    IGNORE,
    AnswerSet,
    answer_logits,
    answers_correct,
    qa_hidden_states,
    question_batch,
    scene_pixel_values,
)
from craft_vla.models.attention import set_matmul_attention
from craft_vla.models.bridge import insert_patches
from craft_vla.models.llm import decoder_hidden_states
from craft_vla.models.prismatic import prismatic_key, to_prismatic_key
from craft_vla.sim import ACTION_DIM, STATE_DIM
from craft_vla.training.config import FinetuneConfig
from craft_vla.training.setup import build_model, load_tokenizer

TINY = PretrainConfig(
    steps=3,
    batch_size=8,
    warmup_steps=1,
    train_scenes=6,
    questions_per_scene=2,
    heldout_scenes=3,
    heldout_questions_per_scene=2,
)


def test_demo_preset_fits_the_suite_and_its_tokenizer(config, tokenizer):
    assert (config.action_dim, config.proprio_dim) == (ACTION_DIM, STATE_DIM)
    assert config.patches_per_image == 16 and config.num_patches == 32
    assert tokenizer.vocab_size <= config.llm.vocab_size
    with pytest.raises(ValueError, match="does not fit the embedded suite"):
        demo_config(tokenizer, image_size=32)


def test_scene_pixel_values_equal_the_per_image_preprocessing(scenes):
    batched = scene_pixel_values(scenes, [4, 0, 4], 64)
    reference = torch.stack(
        [build_pixel_values([scenes.images[i], scenes.wrist_images[i]], 64) for i in (4, 0, 4)]
    )
    assert torch.equal(batched, reference)


def test_answer_set_tokens_and_restricted_greedy_correctness(tokenizer):
    cell = AnswerSet(tokenizer).tokens["bc"]
    assert len(cell) == 1 and tokenizer.decode(cell) == "bc"  # the suite's answers are single words
    answers = AnswerSet(tokenizer, ["red", "blue", "top left", "top right"])  # multi-token answers work too
    red, top, left, right = (tokenizer.token_id(w) for w in ("red", "top", "left", "right"))
    assert answers.tokens["top left"] == (top, left) and answers.max_length == 2
    allowed = answers.allowed_mask(answers.tokens["top left"], 256)
    assert allowed[0].nonzero().flatten().tolist() == sorted([red, tokenizer.token_id("blue"), top])
    assert allowed[1].nonzero().flatten().tolist() == sorted([left, right])
    answer_ids = torch.tensor([[red, IGNORE], [top, left], [top, left]])
    mask = torch.stack(
        [answers.allowed_mask(answers.tokens[a], 256) for a in ("red", "top left", "top left")]
    )
    logits = torch.zeros(3, 2, 256)
    logits[0, 0, red] = logits[1, 0, top] = logits[1, 1, left] = logits[2, 0, top] = 1.0
    logits[2, 1, right] = 1.0
    logits[:, :, tokenizer.token_id("what")] = 5.0  # not an answer token: never chosen
    assert answers_correct(logits, answer_ids, mask).tolist() == [True, True, False]
    with pytest.raises(ValueError, match="prefixes"):
        AnswerSet(tokenizer, ["top left", "top"])
    with pytest.raises(ValueError, match="not in the tokenizer"):
        AnswerSet(tokenizer, ["magenta"])


def test_question_batch_packs_the_questions_of_a_scene_after_its_image(scenes, tokenizer, config):
    rows = [(2, scenes.questions[2][:3]), (5, scenes.questions[5][:1])]
    batch = question_batch(scenes, rows, tokenizer, AnswerSet(tokenizer), 64, config.num_patches, 256)
    assert batch["answer_ids"].shape == (2, 3, 1) and batch["question_mask"].tolist() == [
        [True] * 3,
        [True, False, False],
    ]
    for row, (_, questions) in enumerate(rows):
        expected, segment = [tokenizer.token_id("<|im_start|>")], [0]
        for j, question in enumerate(questions):
            text, answer = tokenizer.encode(question.text), tokenizer.encode(question.answer)
            # multimodal index = text index + num_patches: the last question token
            # predicts the first answer token
            assert batch["answer_positions"][row, j, 0] == config.num_patches + len(expected) + len(text) - 1
            assert batch["answer_ids"][row, j].tolist() == answer
            expected += [*text, *answer[:-1]]
            segment += [j + 1] * (len(text) + len(answer) - 1)
        length = len(expected)
        assert batch["input_ids"][row, :length].tolist() == expected
        assert batch["segment"][row].tolist() == segment + [-1] * (batch["segment"].shape[1] - length)


@pytest.mark.parametrize("attention", ["sdpa", "matmul"])
def test_packed_questions_compute_what_each_question_computes_alone(
    scenes, tokenizer, config, policy, attention
):
    """Reference: each question alone in the VLM's ordinary causal pass (`decoder_hidden_states`)."""
    vlm, answers = policy.vla.eval(), AnswerSet(tokenizer)
    init_attention(vlm, 0.09)  # sharp attention, so a leak across questions would show
    if attention == "matmul":  # the kernel bf16 pretraining runs on a CPU (`models.attention`)
        set_matmul_attention(vlm)
    rows = [(i, scenes.questions[i][:4]) for i in (0, 7)]
    with torch.no_grad():
        packed = question_batch(scenes, rows, tokenizer, answers, 64, config.num_patches, 256)
        logits = answer_logits(vlm, qa_hidden_states(vlm, packed)[-1], packed["answer_positions"])
        for row, (scene, questions) in enumerate(rows):
            for j, question in enumerate(questions):
                alone = question_batch(
                    scenes, [(scene, [question])], tokenizer, answers, 64, config.num_patches, 256
                )
                language_model = vlm.language_model
                embeds = insert_patches(
                    language_model.get_input_embeddings()(alone["input_ids"]),
                    vlm.projector(vlm.vision_backbone(alone["pixel_values"])),
                )
                mask = torch.ones(embeds.shape[:2], dtype=torch.bool)
                hidden = decoder_hidden_states(language_model, embeds, mask, vlm.num_layers)
                reference = answer_logits(vlm, hidden[-1], alone["answer_positions"])[0, 0]
                torch.testing.assert_close(logits[row, j], reference, atol=1e-4, rtol=1e-4)


def test_pretraining_steps_decrease_the_loss(scenes, tokenizer, config):
    cfg = PretrainConfig(learning_rate=3e-3)
    torch.manual_seed(0)
    from craft_vla.models import build_policy

    vlm = build_policy(config).vla
    head = cell_head(config, tokenizer)
    optimizer = make_optimizer([vlm, head], cfg)
    rows = [(i, scenes.questions[i]) for i in range(8)]
    batch = question_batch(scenes, rows, tokenizer, AnswerSet(tokenizer), 64, config.num_patches, 256)
    losses = [pretrain_step(vlm, head, optimizer, batch, scenes, cfg) for _ in range(8)]
    assert losses[-1]["qa_loss"] < 0.5 * losses[0]["qa_loss"]
    assert losses[-1]["cell_loss"] < losses[0]["cell_loss"]
    assert vlm.action_queries.weight.abs().sum() == 0  # not part of the QA sequence


@pytest.fixture(scope="module")
def pretrained():
    return pretrain(TINY, progress=False)


def test_pretraining_is_deterministic(pretrained):
    vlm, _, metrics = pretrained
    again, _, metrics_again = pretrain(TINY, progress=False)
    for (name, a), (_, b) in zip(vlm.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    assert metrics["heldout_qa"] == metrics_again["heldout_qa"]
    assert metrics["heldout_qa"]["num_questions"] == 6 and len(metrics["curve"]) == 2


def test_snapshot_is_a_prismatic_run_dir_that_the_trainer_reloads_bit_for_bit(pretrained, tmp_path):
    vlm, tokenizer, metrics = pretrained
    save_snapshot(vlm, tokenizer, metrics, TINY, tmp_path)
    checkpoint = torch.load(tmp_path / "checkpoints" / "latest-checkpoint.pt", weights_only=True)
    assert set(checkpoint["model"]) == {"projector", "llm_backbone", "vision_backbone"}
    assert "projector.0.weight" in checkpoint["model"]["projector"]
    assert "llm.model.layers.0.self_attn.q_proj.weight" in checkpoint["model"]["llm_backbone"]
    assert "dino_featurizer.blocks.0.ls1.gamma" in checkpoint["model"]["vision_backbone"]
    config_json = json.loads((tmp_path / "config.json").read_text())
    assert config_json["model"]["arch_specifier"] == "no-align+fused-gelu-mlp"
    assert config_json["pretrain"]["steps"] == TINY.steps
    assert json.loads((tmp_path / "pretrain_metrics.json").read_text())["steps"] == TINY.steps

    reloaded, reloaded_tokenizer = load_snapshot(tmp_path)
    assert reloaded_tokenizer.tokens == tokenizer.tokens
    cfg = FinetuneConfig(model="craft-demo", vlm_path=str(tmp_path))
    assert load_tokenizer(cfg, []).tokens == tokenizer.tokens
    policy, _ = build_model(cfg, ACTION_DIM, STATE_DIM, tokenizer.vocab_size)
    original = vlm.state_dict()
    for model in (reloaded, policy.vla):
        loaded = model.state_dict()
        assert loaded.keys() == original.keys()
        for name, value in original.items():
            assert torch.equal(loaded[name], value), name


def test_prismatic_key_inverse_round_trips(config):
    from craft_vla.models import build_policy

    for key in build_policy(config, device="meta").vla.state_dict():
        if key != "action_queries.weight":
            part, inner = to_prismatic_key(key)
            assert prismatic_key(f"{part}.{inner}") == key


def test_pretrained_snapshot_is_cached_and_written_atomically(tmp_path, monkeypatch, pretrained):
    calls = []

    def fake_pretrain(cfg, progress):
        calls.append(cfg)
        return pretrained

    monkeypatch.setattr(pretrain_module, "pretrain", fake_pretrain)
    first = pretrained_snapshot(TINY, tmp_path, progress=False)
    again = pretrained_snapshot(TINY, tmp_path, progress=False)
    assert first == again and len(calls) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]  # no temporary directory left
    other = pretrained_snapshot(replace(TINY, seed=1), tmp_path, progress=False)
    assert other != first and len(calls) == 2
    assert (
        snapshot_key(TINY) == snapshot_key(replace(TINY)) != snapshot_key(replace(TINY, learning_rate=1e-4))
    )


@pytest.mark.slow
def test_quick_pretraining_is_well_above_chance():
    """The `--quick` budget (about a minute on 2 cores): a random model answers
    0.3 % (always the same word)."""
    torch.set_num_threads(2)
    _, _, metrics = pretrain(quick_pretrain_config(), progress=False)
    qa = metrics["heldout_qa"]
    assert qa["overall"] > 0.5 and qa["category/colour_at"] > 0.9 and qa["category/size_at"] > 0.8
