import numpy as np
import pytest

from craft_vla.data.chunks import action_chunk
from craft_vla.data.prompt import prompt_token_ids, vla_prompt_text
from craft_vla.data.tokenizers import TiktokenQwenTokenizer, WordTokenizer

# Qwen2.5 ids of "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful
# assistant.<|im_end|>\n<|im_start|>user\n", of "What is the capital of France?" and of
# "<|im_end|>\n<|im_start|>assistant\n", as published in Qwen2.5 tokenizer tests and vLLM logs.
QWEN25_SYSTEM_PREFIX = [
    151644,
    8948,
    198,
    2610,
    525,
    1207,
    16948,
    11,
    3465,
    553,
    54364,
    14817,
    13,
    1446,
    525,
    264,
    10950,
    17847,
    13,
    151645,
    198,
    151644,
    872,
    198,
]
QWEN25_FRANCE = [3838, 374, 279, 6722, 315, 9625, 30]
QWEN25_ASSISTANT = [151645, 198, 151644, 77091, 198]


def test_prompt_text_matches_prismatic_qwen_builder():
    assert vla_prompt_text("Pick Up the Bowl") == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat action should the robot take to pick up the bowl?<|im_end|>\n"
        "<|im_start|>assistant\n <|im_end|><|endoftext|>"
    )


def test_qwen_ids_match_reference_and_drop_three_trailing_tokens():
    tokenizer = TiktokenQwenTokenizer()
    question = "What is the capital of France?"
    text = vla_prompt_text("x").replace("What action should the robot take to x?", question)
    full = tokenizer.encode(text)
    assert full == QWEN25_SYSTEM_PREFIX + QWEN25_FRANCE + QWEN25_ASSISTANT + [220, 151645, 151643]
    ids = prompt_token_ids("Pick up the black bowl", tokenizer, num_action_queries=64)
    reference = tokenizer.encode(vla_prompt_text("Pick up the black bowl"))
    assert ids == reference[:-3] + [tokenizer.placeholder_id] * 64
    assert ids[: len(QWEN25_SYSTEM_PREFIX)] == QWEN25_SYSTEM_PREFIX
    assert ids[-64 - 5 : -64] == QWEN25_ASSISTANT


def test_word_tokenizer_is_deterministic_and_round_trips(tmp_path):
    texts = ["Put the red cube left of the blue ball", vla_prompt_text("stack the green cube")]
    tokenizer = WordTokenizer.from_texts(texts)
    assert WordTokenizer.from_texts(list(reversed(texts))).tokens == tokenizer.tokens
    tokenizer.save(tmp_path / "vocab.json")
    loaded = WordTokenizer.load(tmp_path / "vocab.json")
    assert loaded.tokens == tokenizer.tokens
    ids = prompt_token_ids("Stack the green cube", loaded, num_action_queries=4, system_prompt=None)
    words = [loaded.tokens[i] for i in ids]
    assert (
        words
        == [
            "<|im_start|>",
            "user",
            "what",
            "action",
            "should",
            "the",
            "robot",
            "take",
            "to",
            "stack",
            "the",
            "green",
            "cube",
            "?",
            "<|im_end|>",
            "<|im_start|>",
            "assistant",
        ]
        + ["<act>"] * 4
    )
    assert loaded.encode("purple") == [loaded.unk_token_id]


def test_action_chunk_repeats_the_last_action():
    actions = np.arange(10, dtype=np.float32).reshape(5, 2)
    np.testing.assert_array_equal(action_chunk(actions, 1, 3), actions[[1, 2, 3]])
    np.testing.assert_array_equal(action_chunk(actions, 3, 4), actions[[3, 4, 4, 4]])
    np.testing.assert_array_equal(action_chunk(actions, 4, 2), actions[[4, 4]])


def test_word_tokenizer_rejects_bad_vocab(tmp_path):
    with pytest.raises(ValueError, match="must start with"):
        WordTokenizer(["a", "b"])


def test_qwen_tokenizer_pickles():
    import pickle

    tokenizer = pickle.loads(pickle.dumps(TiktokenQwenTokenizer()))
    assert tokenizer.encode("<|im_start|>user\n") == [151644, 872, 198]


def test_hf_tokenizer_from_a_local_directory(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from craft_vla.data.tokenizers import HFQwenTokenizer

    words = [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "[UNK]",
        "system",
        "user",
        "assistant",
        "open",
        "drawer",
    ]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]").save_pretrained(tmp_path)
    tokenizer = HFQwenTokenizer(tmp_path)
    assert tokenizer.pad_token_id == tokenizer.placeholder_id == 0
    ids = prompt_token_ids("Open the drawer", tokenizer, num_action_queries=2, system_prompt=None)
    assert [words[i] for i in ids] == [
        "<|im_start|>",
        "user",
        *["[UNK]"] * 7,
        "open",
        "[UNK]",
        "drawer",
        "[UNK]",
        "<|im_end|>",
        "<|im_start|>",
        "assistant",
        "<|endoftext|>",
        "<|endoftext|>",
    ]
