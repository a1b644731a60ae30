"""The vocabulary covers every word the suite writes."""

from __future__ import annotations

import re

import numpy as np

from craft_vla.sim.episodes import make_episode
from craft_vla.sim.perception import sample_perception_scene
from craft_vla.sim.questions import sample_questions
from craft_vla.sim.splits import SPLITS
from craft_vla.sim.tasks import TASK_NAMES
from craft_vla.sim.vocabulary import answer_vocabulary, vocabulary
from craft_vla.sim.world import WorldConfig


def test_vocabulary_is_sorted_unique_single_words():
    words = vocabulary()
    # letters only: a word-level tokenizer that splits digits from letters keeps each word one token
    assert words == sorted(set(words)) and all(re.fullmatch("[a-z]+", w) for w in words)
    assert set(answer_vocabulary()) <= set(words)
    assert {"red", "cube", "left", "above", "yes", "zero", "aa", "dd", "metal", "shove"} <= set(words)


def test_every_instruction_and_question_is_covered():
    words = set(vocabulary())
    for task in TASK_NAMES:
        for split in SPLITS:
            for seed in range(8):
                assert set(make_episode(task, seed, split).instruction.split()) <= words
    config, answers = WorldConfig(), set(answer_vocabulary())
    for seed in range(60):
        rng = np.random.default_rng(seed)
        for question in sample_questions(sample_perception_scene(rng, config), 10, rng, config):
            assert set(question.text.split()) <= words and question.answer in answers


def test_answers_are_one_word_from_a_small_closed_set():
    answers = answer_vocabulary()
    assert len(answers) < 50 and all(" " not in a for a in answers)
    assert answer_vocabulary(grid=3)[:3] == ["aa", "ab", "ac"] and "dd" not in answer_vocabulary(grid=3)


def test_the_word_tokenizer_keeps_every_answer_one_token():
    from craft_vla.data.tokenizers import WordTokenizer

    tokenizer = WordTokenizer.from_texts(vocabulary())
    for answer in answer_vocabulary():
        assert len(tokenizer.encode(answer)) == 1
    assert tokenizer.unk_token_id not in tokenizer.encode(
        make_episode("place_relation", 0, "heldout").instruction
    )
