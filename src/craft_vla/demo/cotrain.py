"""The co-training oracle (issue 16): full SFT with the pretraining perception questions added to every step.

Each fine-tuning step adds w · L_QA, the answer loss of pretraining (demo/qa.py) on a batch of the snapshot's
own pretraining scenes, to the action loss; its gradient joins g_act (`TrainState.aux_loss`). It uses VLM
data that CRaFT does not need, so it is the reference for how much of the answers can be kept, not a
competitor: CRaFT sees no question and no answer.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor, nn

from craft_vla.data.tokenizers import WordTokenizer
from craft_vla.demo.model import demo_config
from craft_vla.demo.pretrain import PretrainConfig
from craft_vla.demo.qa import AnswerSet, answer_logits, answer_loss, qa_hidden_states, question_batch
from craft_vla.sim import make_perception_set
from craft_vla.training.setup import to_device


class CoTrainingLoss:
    """(model, step) -> weight · L_QA on `batch_size` scenes drawn for that step from the first `scenes`
    scenes of pretraining's stream (each with all its questions, packed as in pretraining)."""

    def __init__(
        self,
        tokenizer: WordTokenizer,
        pretrain: PretrainConfig,
        scenes: int,
        batch_size: int,
        weight: float,
        seed: int,
    ) -> None:
        self.config = demo_config(tokenizer)
        # per-scene seeds: these are exactly pretraining's first `scenes` scenes and questions
        self.perception = make_perception_set(
            scenes,
            pretrain.questions_per_scene,
            seed=pretrain.seed,
            name="pretrain",
            image_size=self.config.image_size,
        )
        self.tokenizer = tokenizer
        self.answers = AnswerSet(tokenizer)
        self.batch_size = batch_size
        self.weight = weight
        self.seed = seed

    def batch(self, step: int) -> dict[str, Tensor]:
        """The scenes of `step`: drawn from the step alone, so that a resumed run sees the same ones."""
        rng = np.random.default_rng([self.seed, step])
        chosen = rng.choice(len(self.perception), size=self.batch_size, replace=False)
        return question_batch(
            self.perception,
            [(int(i), self.perception.questions[i]) for i in chosen],
            self.tokenizer,
            self.answers,
            self.config.image_size,
            self.config.num_patches,
            self.config.llm.vocab_size,
        )

    def __call__(self, model: nn.Module, step: int) -> Tensor:
        vlm = model.vla
        batch = to_device(self.batch(step), next(vlm.parameters()).device)
        hidden = qa_hidden_states(vlm, batch)
        logits = answer_logits(vlm, hidden[-1], batch["answer_positions"])
        return self.weight * answer_loss(logits, batch["answer_ids"])
