"""The co-training oracle's loss: pretraining's own questions, drawn by the step alone, reaching the VLM."""

import torch

from craft_vla.demo.cotrain import CoTrainingLoss
from craft_vla.demo.pretrain import PretrainConfig
from craft_vla.demo.qa import AnswerSet, answer_logits, answer_loss, qa_hidden_states, question_batch
from craft_vla.sim import make_perception_set


def test_cotraining_loss_is_pretrainings_answer_loss_on_its_scenes(tokenizer, config, policy):
    pretrain = PretrainConfig(questions_per_scene=3, seed=5)
    loss = CoTrainingLoss(tokenizer, pretrain, scenes=10, batch_size=4, weight=0.5, seed=1)
    # pretraining's own first scenes and questions (per-scene seeds)
    first = make_perception_set(10, 3, seed=5, name="pretrain", image_size=config.image_size)
    assert loss.perception.questions == first.questions
    assert torch.equal(torch.as_tensor(loss.perception.images), torch.as_tensor(first.images))

    a, b, other = loss.batch(7), loss.batch(7), loss.batch(8)
    assert torch.equal(a["scene"], b["scene"]) and not torch.equal(a["scene"], other["scene"])

    value = loss(policy, 7)
    chosen = [(int(i), first.questions[int(i)]) for i in a["scene"]]
    batch = question_batch(
        first,
        chosen,
        tokenizer,
        AnswerSet(tokenizer),
        config.image_size,
        config.num_patches,
        config.llm.vocab_size,
    )
    hidden = qa_hidden_states(policy.vla, batch)
    expected = 0.5 * answer_loss(
        answer_logits(policy.vla, hidden[-1], batch["answer_positions"]), batch["answer_ids"]
    )
    torch.testing.assert_close(value, expected, rtol=0, atol=0)

    value.backward()
    grads = {n: p.grad for n, p in policy.named_parameters() if p.grad is not None}
    assert any(n.startswith("vla.language_model") and g.abs().sum() > 0 for n, g in grads.items())
    assert not any(n.startswith("action_head") for n in grads)
