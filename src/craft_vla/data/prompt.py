"""VLA-Adapter's prompt: Qwen chat format, "openvla" system prompt, 64 action placeholders.

Source: the `QwenPromptBuilder` of the prismatic code that VLA-Adapter ships
(prismatic/models/backbones/llm/prompting/qwen_prompter.py; VLA-Adapter's RLDSBatchTransform
uses it with model family "openvla"). It writes
    <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{message}<|im_end|>\\n<|im_start|>assistant\\n
then the (empty, so " ") assistant message and <|im_end|>\\n, and ends a prompt that closes on
the assistant's turn by replacing the last "\\n" with <|endoftext|>. VLA-Adapter tokenises that
text and deletes the last three tokens (" ", <|im_end|>, <|endoftext|>) before appending the
action placeholders; `prompt_token_ids` does the same, by token, so it also works for the word
tokenizer, which has no whitespace tokens.
"""

from __future__ import annotations

from typing import Protocol

OPENVLA_QWEN_SYSTEM_PROMPT = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


class PromptTokenizer(Protocol):
    placeholder_id: int

    def encode(self, text: str) -> list[int]: ...

    def token_id(self, token: str) -> int: ...

    def decode(self, ids: list[int]) -> str: ...


def user_message(instruction: str) -> str:
    """The user turn: `What action should the robot take to {instruction.lower()}?`."""
    return f"What action should the robot take to {instruction.lower()}?"


def vla_prompt_text(instruction: str, system_prompt: str | None = OPENVLA_QWEN_SYSTEM_PROMPT) -> str:
    """The full prompt text, as prismatic's QwenPromptBuilder returns it (empty assistant turn)."""
    system = f"<|im_start|>system\n{system_prompt.strip()}<|im_end|>\n" if system_prompt is not None else ""
    user = f"<|im_start|>user\n{user_message(instruction).strip()}<|im_end|>\n<|im_start|>assistant\n"
    return system + user + " <|im_end|>" + "<|endoftext|>"


def prompt_token_ids(
    instruction: str,
    tokenizer: PromptTokenizer,
    num_action_queries: int = 64,
    system_prompt: str | None = OPENVLA_QWEN_SYSTEM_PROMPT,
) -> list[int]:
    """Prompt ids without the closing end-of-turn tokens, followed by `num_action_queries` placeholders.

    (S,) with S = prompt length + num_action_queries; the placeholders are the last ids.
    """
    ids = tokenizer.encode(vla_prompt_text(instruction, system_prompt))
    for token in ("<|endoftext|>", "<|im_end|>"):
        if ids and ids[-1] == tokenizer.token_id(token):
            ids.pop()
    if ids and tokenizer.decode([ids[-1]]) == " ":
        ids.pop()
    return ids + [tokenizer.placeholder_id] * num_action_queries
