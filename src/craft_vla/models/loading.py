"""A directory to a policy, a tokenizer and image constants: the one loader of finetune, build-cache, the demo
and the evaluation.

What a directory is (`directory_kind`), one rule for every command:
- Prismatic VLM run (where VLA-Adapter's fine-tuning starts, spec section 9): config.json with a "model"
  entry, and checkpoints/*.pt;
- HF-format VLA: config.json + model.safetensors (or model.safetensors.index.json and its shards);
- fine-tuned checkpoint, VLA-Adapter's layout: action_head--{step}_checkpoint.pt beside the VLA's full
  weights (config.json + model.safetensors) or its LoRA adapter (lora_adapter/). A craft-vla run's step
  folder runs/<run>/step-N is one; its run folder holds the word tokenizer and, for LoRA, the frozen base
  VLA that the adapters of every step apply to (base_vla/, written by the first save).

The tokenizer and the image constants are read from the first of a list of directories that holds them
(VLA-Adapter's --config_file_path is such a directory). Nothing here asks transformers to resolve a
config.json, so a release's `auto_map` never prompts to run its custom code.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from craft_vla.data.image import ImageNormalization
from craft_vla.data.tokenizers import (
    BPE_FILES,
    TOKENIZER_EXTRA_FILES,
    TOKENIZER_JSON,
    TiktokenQwenTokenizer,
    WordTokenizer,
    has_tokenizer_files,
    tokenizer_in_directory,
)
from craft_vla.models.checkpoint import (
    LORA_DIR,
    WEIGHTS,
    attach_components,
    config_from_hf,
    has_weights,
    load_vla,
    resolve_step,
)
from craft_vla.models.config import VLAAdapterConfig, get_config
from craft_vla.models.lora import load_lora_adapter
from craft_vla.models.policy import VLAAdapterPolicy
from craft_vla.models.prismatic import load_prismatic_vlm, prismatic_config
from craft_vla.models.vlm import VLM

PRISMATIC_VLM = "Prismatic VLM run directory"
HF_VLA = "HF-format VLA directory"
FINETUNED = "fine-tuned checkpoint directory"
EXPECTED = (
    f"a {PRISMATIC_VLM} (config.json with a 'model' entry + checkpoints/*.pt), an {HF_VLA} (config.json + "
    f"{WEIGHTS}), or a {FINETUNED} (action_head--STEP_checkpoint.pt beside {WEIGHTS} or {LORA_DIR}/)"
)
BASE_VLA_DIR = "base_vla"
STEP_DIR = re.compile(r"step-\d+")  # craft-vla's step folders, runs/<run>/step-N
QWEN25_VOCAB_SIZE = 151936
PROCESSOR_CONFIG = "preprocessor_config.json"
HF_TOKENIZER_FILES = (TOKENIZER_JSON, *BPE_FILES, *TOKENIZER_EXTRA_FILES)


def read_config(directory: Path) -> dict[str, Any]:
    """config.json of `directory`, {} when it has none."""
    path = directory / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def listing(directory: Path) -> str:
    """What a directory holds, for error messages (folders end in '/')."""
    if not directory.is_dir():
        return "no such directory"
    names = sorted(p.name + "/" * p.is_dir() for p in directory.iterdir())
    more = f" ... and {len(names) - 20} more" if len(names) > 20 else ""
    return ", ".join(names[:20]) + more or "nothing"


def directory_kind(path: str | Path) -> str:
    """PRISMATIC_VLM, HF_VLA or FINETUNED; an error naming what was expected and what was found otherwise."""
    path = Path(path)
    if any(path.glob("action_head--*_checkpoint.pt")) and (has_weights(path) or (path / LORA_DIR).is_dir()):
        return FINETUNED
    config = read_config(path)
    if isinstance(config.get("model"), dict) and any((path / "checkpoints").glob("*.pt")):
        return PRISMATIC_VLM
    if config and has_weights(path):
        return HF_VLA
    raise FileNotFoundError(f"{path} is not a model directory: expected {EXPECTED}; found {listing(path)}")


def vlm_config(path: str | Path, model: str = "") -> VLAAdapterConfig:
    """The config of the VLM in a Prismatic or HF-format directory. `model`, a preset name, replaces what a
    Prismatic run's config.json implies and gives the sizes a released config.json does not record (our own
    config.json records them all); "" infers the preset from the directory."""
    path = Path(path)
    base = get_config(model) if model else None
    config = read_config(path)
    if directory_kind(path) == PRISMATIC_VLM:
        try:
            return prismatic_config(config, base)
        except ValueError as error:
            raise ValueError(f"{path / 'config.json'}: {error}") from error
    if not has_weights(path):
        raise FileNotFoundError(f"{path} holds no VLA weights ({WEIGHTS}): expected {EXPECTED}")
    return config_from_hf(config, base)


def load_vlm(path: str | Path, model: str = "", device: str = "cpu") -> VLM:
    """The VLM of a Prismatic run or an HF-format directory (also a fine-tuned one with full weights)."""
    config = vlm_config(path, model)
    if directory_kind(path) == PRISMATIC_VLM:
        return load_prismatic_vlm(path, config, device=device)
    return load_vla(path, config, device)


def tokenizer_source(sources: Sequence[str | Path]) -> Path | None:
    """The first source holding a tokenizer: a WordTokenizer json file, or a directory with
    word_tokenizer.json, tokenizer.json, or vocab.json + merges.txt (Qwen2's BPE, as VLA-Adapter ships it)."""
    for source in map(Path, sources):
        if not source.exists():
            raise FileNotFoundError(f"{source} does not exist (a tokenizer, processor or model directory)")
        if source.is_file() or has_tokenizer_files(source):
            return source
    return None


def load_tokenizer(sources: Sequence[str | Path], vocab_size: int | None = None) -> Any:
    """The tokenizer of `tokenizer_source(sources)`; with none, Qwen2.5's BPE (`TiktokenQwenTokenizer`, the
    same ids) for a model of `vocab_size` 151936."""
    source = tokenizer_source(sources)
    if source is not None:
        return WordTokenizer.load(source) if source.is_file() else tokenizer_in_directory(source)
    if vocab_size == QWEN25_VOCAB_SIZE:
        return TiktokenQwenTokenizer()
    raise FileNotFoundError(
        f"no tokenizer in {[str(s) for s in sources]} for a model with a {vocab_size}-token vocabulary: "
        f"expected word_tokenizer.json, {TOKENIZER_JSON}, or {' + '.join(BPE_FILES)} (pass --tokenizer_path "
        "or --config_file_path, the directory holding them)"
    )


def copy_preprocessing_files(
    tokenizer_sources: Sequence[str | Path], processor_sources: Sequence[str | Path], directory: Path
) -> None:
    """Copy the HF tokenizer files and the preprocessor_config.json a run read into `directory`, as
    VLA-Adapter saves its processor into every checkpoint: the checkpoint then evaluates with what it was
    trained with. (A word tokenizer is saved in the run folder.)"""
    tokenizer = tokenizer_source(tokenizer_sources)
    files = [tokenizer / name for name in HF_TOKENIZER_FILES] if tokenizer and tokenizer.is_dir() else []
    processor = next((Path(s) for s in processor_sources if (Path(s) / PROCESSOR_CONFIG).is_file()), None)
    files += [processor / PROCESSOR_CONFIG] if processor else []
    for file in files:
        if file.is_file():
            shutil.copyfile(file, directory / file.name)


def checkpoint_sources(directory: str | Path, base_vla_path: str | Path = "") -> list[Path]:
    """Where a fine-tuned checkpoint's tokenizer and processor are looked for, in order: the checkpoint, its
    run folder (for a craft-vla step folder), the base VLA it adapts."""
    directory = Path(directory)
    sources = [directory]
    if STEP_DIR.fullmatch(directory.name):
        sources.append(directory.parent)
    return sources + ([Path(base_vla_path)] if base_vla_path else [])


def lora_base(directory: Path, base_vla_path: str | Path) -> Path:
    """The VLA a LoRA checkpoint adapts: `base_vla_path`, else the base_vla/ of its craft-vla run."""
    if base_vla_path:
        return Path(base_vla_path)
    run_base = directory.parent / BASE_VLA_DIR
    if STEP_DIR.fullmatch(directory.name) and run_base.is_dir():
        return run_base
    raise ValueError(
        f"{directory} holds a LoRA adapter but no merged weights: pass --base_vla_path, the VLA or Prismatic "
        f"VLM it was fine-tuned from (a craft-vla run keeps it in <run>/{BASE_VLA_DIR}/)"
    )


def round_queries_to_bf16(policy: VLAAdapterPolicy) -> None:
    """Round the action-query states to bfloat16 before the head, as VLA-Adapter's inference does (its
    `_regression_or_discrete_prediction` casts them `.to(torch.bfloat16)`); a no-op for a bf16 model."""

    def hook(module: torch.nn.Module, args: tuple) -> tuple:
        raw_latents, aq_latents, proprio = args
        return raw_latents, tuple(q.to(torch.bfloat16).to(q.dtype) for q in aq_latents), proprio

    policy.action_head.register_forward_pre_hook(hook)


@dataclass
class FinetunedCheckpoint:
    """A fine-tuned checkpoint ready to act: the policy (eval mode), its tokenizer and image constants."""

    policy: VLAAdapterPolicy
    tokenizer: Any
    normalization: ImageNormalization
    step: str
    head_input_bf16: bool


def load_finetuned_checkpoint(
    directory: str | Path,
    step: int | str = "latest",
    base_vla_path: str | Path = "",
    use_pro_version: bool | None = None,
    head_input_bf16: bool | None = None,
    device: str = "cpu",
) -> FinetunedCheckpoint:
    """A fine-tuned checkpoint directory: VLA-Adapter's release, or a step folder of a craft-vla run.

    Full weights load as they are (also beside a lora_adapter/, when the adapters were saved merged); a LoRA
    adapter alone is applied to `base_vla_path` (an HF-format or Prismatic VLM directory), by default the
    run's base_vla/. `step` "latest": VLA-Adapter's latest files, else the highest step. The head's block
    type is read from its keys; `use_pro_version` (True/False) must then agree. `head_input_bf16`: round the
    action-query states to bf16 before the head as VLA-Adapter's inference does; None: only for a model not
    written by craft-vla (no "craft_vla" section in the config.json it was built from).
    """
    directory = Path(directory)
    full = has_weights(directory)
    if not full and not (directory / LORA_DIR).is_dir():
        raise FileNotFoundError(
            f"{directory} is not a fine-tuned checkpoint: expected {EXPECTED}; found {listing(directory)}"
        )
    source = directory if full else lora_base(directory, base_vla_path)
    step = resolve_step(directory, step)
    vlm = load_vlm(source, device=device)
    policy = attach_components(vlm, vlm.config, directory, step, device, use_pro_version)
    if not full:
        load_lora_adapter(policy, directory / LORA_DIR, trainable=False)
    if head_input_bf16 is None:
        head_input_bf16 = "craft_vla" not in read_config(source)
    if head_input_bf16:
        round_queries_to_bf16(policy)
    sources = checkpoint_sources(directory, base_vla_path)
    tokenizer = load_tokenizer(sources, policy.config.llm.vocab_size)
    normalization = ImageNormalization.from_directories(*sources)
    return FinetunedCheckpoint(policy.to(device).eval(), tokenizer, normalization, step, head_input_bf16)
