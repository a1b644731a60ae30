"""models/loading.py: what a directory is, the model inferred from it, the tokenizer (also from vocab.json +
merges.txt), the head type from its keys, no question asked on a load, and every step folder a fine-tuning run
writes evaluating like the policy it trained."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from craft_vla.data.image import ImageNormalization
from craft_vla.data.prompt import prompt_token_ids, vla_prompt_text
from craft_vla.data.rlds_writer import write_rlds_dataset
from craft_vla.data.tokenizers import WordTokenizer
from craft_vla.eval.command import LiberoCommand, build_chunk_policy
from craft_vla.eval.libero_vla_adapter import VLAAdapterChunkPolicy
from craft_vla.models import build_policy, get_config
from craft_vla.models.checkpoint import head_version, save_policy_checkpoint, save_vla
from craft_vla.models.loading import (
    FINETUNED,
    HF_VLA,
    PRISMATIC_VLM,
    directory_kind,
    load_finetuned_checkpoint,
    load_tokenizer,
    load_vlm,
    vlm_config,
)
from craft_vla.models.lora import adapters_disabled, apply_lora
from craft_vla.models.prismatic import save_prismatic_vlm
from craft_vla.training import finetune as finetune_module
from craft_vla.training.config import FinetuneConfig
from craft_vla.training.distributed import unwrap

from .conftest import make_batch

KEYS = Path(__file__).parents[1] / "fixtures" / "vla_adapter_keys"
LIBERO = "libero_spatial_no_noops"
INSTRUCTIONS = ("pick up the black bowl and place it on the plate", "open the top drawer of the cabinet")
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
QWEN_SPLIT = (  # Qwen2's pre-tokenizer pattern
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"""
    r"""|\s+(?!\S)|\s+"""
)
RELEASE_AUTO_MAP = {  # as in VLA-Adapter's released config.json: transformers would offer to run this code
    "AutoConfig": "configuration_prismatic.OpenVLAConfig",
    "AutoModelForVision2Seq": "modeling_prismatic.OpenVLAForActionPrediction",
}


def tiny_policy(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return build_policy(get_config("tiny", **overrides)).eval()


def test_each_kind_of_directory_is_recognised_and_anything_else_named(tmp_path):
    policy = tiny_policy()
    save_prismatic_vlm(policy.vla, tmp_path / "prismatic", "tiny-qwen2", {"craft_vla_preset": "tiny"})
    save_vla(policy.vla, tmp_path / "hf")
    save_policy_checkpoint(policy, tmp_path / "finetuned", step=3)
    assert directory_kind(tmp_path / "prismatic") == PRISMATIC_VLM
    assert directory_kind(tmp_path / "hf") == HF_VLA
    assert directory_kind(tmp_path / "finetuned") == FINETUNED
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"expected a Prismatic VLM run dir.*found config\.json$"):
        directory_kind(tmp_path / "other")


def test_the_model_is_inferred_from_the_vlm_directory_and_a_preset_overrides_it(tmp_path):
    policy = tiny_policy()
    save_prismatic_vlm(policy.vla, tmp_path / "tiny", "tiny-qwen2", {"craft_vla_preset": "tiny"})
    assert vlm_config(tmp_path / "tiny") == get_config("tiny")
    loaded = load_vlm(tmp_path / "tiny").state_dict()
    original = policy.vla.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in original.items() if k != "action_queries.weight")
    config = json.loads((tmp_path / "tiny" / "config.json").read_text())
    del config["craft_vla_preset"]
    (tmp_path / "tiny" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="llm_backbone_id='tiny-qwen2'.*--model PRESET"):
        vlm_config(tmp_path / "tiny")
    assert vlm_config(tmp_path / "tiny", model="tiny") == get_config("tiny")
    config["model"]["llm_backbone_id"] = "qwen25-0_5b-extra"  # VLA-Adapter's Prismatic VLM
    (tmp_path / "tiny" / "config.json").write_text(json.dumps(config))
    assert vlm_config(tmp_path / "tiny") == get_config("vla-adapter-qwen25-0.5b")


def qwen_like_bpe() -> Tokenizer:
    """A small byte-level BPE built as Qwen2.5's tokenizer.json is: NFC, Qwen's split regex, byte-level
    bytes-to-unicode, the special tokens added after the merged vocabulary."""
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT), "isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator([vla_prompt_text(i) for i in INSTRUCTIONS] * 10, trainer)
    bpe.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return bpe


def write_tokenizer(bpe: Tokenizer, directory: Path, as_json: bool) -> Path:
    """tokenizer.json, or the release's way: vocab.json + merges.txt + the added and special tokens' files."""
    directory.mkdir(parents=True, exist_ok=True)
    added = {t: bpe.token_to_id(t) for t in SPECIAL_TOKENS}
    if as_json:
        bpe.save(str(directory / "tokenizer.json"))
    else:
        bpe.model.save(str(directory))
        (directory / "added_tokens.json").write_text(json.dumps(added))
        (directory / "special_tokens_map.json").write_text(
            json.dumps(
                {
                    "eos_token": "<|endoftext|>",
                    "pad_token": "<|endoftext|>",
                    "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
                }
            )
        )
    decoder = {
        str(i): {
            "content": t,
            "special": True,
            "normalized": False,
            "lstrip": False,
            "rstrip": False,
            "single_word": False,
        }
        for t, i in added.items()
    }
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "Qwen2Tokenizer",
                "processor_class": "PrismaticProcessor",
                "added_tokens_decoder": decoder,
                "auto_map": {"AutoProcessor": "processing_prismatic.PrismaticProcessor"},
                "eos_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
                "unk_token": None,
                "bos_token": None,
                "model_max_length": 32768,
            }
        )
    )
    return directory


def save_full_checkpoint(directory: Path, policy=None) -> Path:
    """A tiny checkpoint with full weights and a config.json carrying the release's auto_map."""
    save_policy_checkpoint(policy or tiny_policy(), directory, step=5)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "auto_map": RELEASE_AUTO_MAP}))
    return directory


def test_vocab_and_merges_give_the_ids_of_tokenizer_json(tmp_path):
    bpe = qwen_like_bpe()
    with_json = write_tokenizer(bpe, save_full_checkpoint(tmp_path / "json"), as_json=True)
    without = write_tokenizer(bpe, save_full_checkpoint(tmp_path / "vocab"), as_json=False)
    assert not (without / "tokenizer.json").exists() and (without / "merges.txt").is_file()
    a, b = (load_finetuned_checkpoint(d).tokenizer for d in (with_json, without))
    texts = [
        vla_prompt_text(INSTRUCTIONS[0]),
        vla_prompt_text("Stack the RED cube, then 12 more!"),
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>",
        "café  naïve\n\n\tend",
    ]
    for text in texts:
        assert a.encode(text) == b.encode(text) == bpe.encode(text).ids, text
    assert prompt_token_ids(INSTRUCTIONS[1], a, 4) == prompt_token_ids(INSTRUCTIONS[1], b, 4)
    for name in ("pad_token_id", "placeholder_id", "vocab_size"):
        assert getattr(a, name) == getattr(b, name), name
    assert a.token_id("<|im_end|>") == b.token_id("<|im_end|>") == bpe.token_to_id("<|im_end|>")


def test_no_load_asks_to_run_custom_code(tmp_path):
    """A released checkpoint's config.json names custom classes (auto_map); transformers' AutoTokenizer would
    stop and ask on stdin whether to run them. The subprocess fails if anything calls input()."""
    directory = write_tokenizer(qwen_like_bpe(), save_full_checkpoint(tmp_path / "release"), as_json=False)
    code = (
        "import builtins, os, sys\n"
        "def asked(*args):\n    print('ASKED', *args, flush=True)\n    os._exit(3)\n"
        "builtins.input = asked\n"
        "from craft_vla.models.loading import load_finetuned_checkpoint, load_tokenizer\n"
        "loaded = load_finetuned_checkpoint(sys.argv[1])\n"
        "print(type(loaded.tokenizer).__name__, type(load_tokenizer([sys.argv[1]])).__name__)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code, str(directory)],
        stdin=subprocess.DEVNULL,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "ASKED" not in result.stdout and "custom code" not in result.stdout + result.stderr
    assert result.stdout.split() == ["HFQwenTokenizer", "HFQwenTokenizer"]


def fixture_keys(name: str) -> dict[str, torch.Tensor]:
    return {line.split("\t")[0]: torch.zeros(1) for line in (KEYS / name).read_text().splitlines() if line}


def test_the_head_type_is_read_from_the_keys_of_the_release_layouts():
    pro, original = fixture_keys("action_head_pro.tsv"), fixture_keys("action_head_v1.tsv")
    assert head_version(pro, "pro") and not head_version(original, "v1")
    assert not head_version({f"module.{k}": v for k, v in original.items()}, "ddp")
    with pytest.raises(ValueError, match="neither mlp_resnet_blocks.*k_self"):
        head_version({"model.fc1.weight": torch.zeros(1)}, "a projector")


def test_an_original_head_loads_whatever_the_config_says_and_a_contrary_flag_is_refused(tmp_path):
    policy = tiny_policy(use_pro_version=False)
    directory = save_full_checkpoint(tmp_path / "v1", policy)
    config = json.loads((directory / "config.json").read_text())
    config["craft_vla"]["use_pro_version"] = True  # a config that does not know: the keys decide
    (directory / "config.json").write_text(json.dumps(config))
    head = directory / "action_head--5_checkpoint.pt"
    torch.save({f"module.{k}": v for k, v in torch.load(head, weights_only=True).items()}, head)  # DDP-saved
    WordTokenizer.from_texts(INSTRUCTIONS).save(directory / "word_tokenizer.json")
    loaded = load_finetuned_checkpoint(directory, use_pro_version=False).policy
    assert loaded.config.use_pro_version is False
    batch = make_batch(policy.config, with_actions=False)
    with torch.no_grad():
        assert torch.equal(loaded(batch).actions, policy(batch).actions)
    with pytest.raises(ValueError, match="use_pro_version=True but .* original \\(k_proj\\) blocks"):
        load_finetuned_checkpoint(directory, use_pro_version=True)


def test_head_input_bf16_rounds_the_action_query_states_before_the_head(tmp_path):
    """VLA-Adapter's inference casts the action-query states to bf16: by default for a model it describes
    (here a LoRA checkpoint on a Prismatic VLM), not for craft-vla's own."""
    policy = tiny_policy()
    save_prismatic_vlm(policy.vla, tmp_path / "prismatic", "tiny-qwen2", {"craft_vla_preset": "tiny"})
    apply_lora(policy, rank=2)
    save_policy_checkpoint(policy, tmp_path / "lora", step=1)
    WordTokenizer.from_texts(INSTRUCTIONS).save(tmp_path / "lora" / "word_tokenizer.json")
    released = load_finetuned_checkpoint(tmp_path / "lora", base_vla_path=tmp_path / "prismatic")
    ours = load_finetuned_checkpoint(
        tmp_path / "lora", base_vla_path=tmp_path / "prismatic", head_input_bf16=False
    )
    assert released.head_input_bf16 and not ours.head_input_bf16
    batch = make_batch(policy.config, with_actions=False)
    with torch.no_grad():
        out = ours.policy(batch)
        queries = tuple(q.to(torch.bfloat16).float() for q in out.aq_latents[1:])
        expected = ours.policy.action_head(out.raw_latents[1:], queries, ours.policy._proprio_token(batch))
        actions = released.policy(batch).actions
    assert torch.equal(actions, expected)
    assert not torch.equal(actions, out.actions)


def libero_like_data(root: Path) -> Path:
    """A LIBERO-sized RLDS dataset (7-D actions, 8-D state, two cameras) named like LIBERO-Spatial's."""
    rng = np.random.default_rng(0)
    episodes = []
    for e in range(4):
        images = rng.integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
        state = rng.normal(size=(6, 8)).astype(np.float32)
        gripper = np.sign(rng.normal(size=(6, 1)))
        action = np.concatenate([np.tanh(state[:, :6]), gripper], 1).astype(np.float32)
        episodes.append(
            {
                "steps": {
                    "observation": {"image": images, "wrist_image": images[:, ::-1].copy(), "state": state},
                    "action": action,
                    "language_instruction": INSTRUCTIONS[e % 2],
                    "is_first": np.arange(6) == 0,
                    "is_last": np.arange(6) == 5,
                },
                "episode_metadata": {"file_path": f"synthetic/{e}"},
            }
        )
    write_rlds_dataset(root, LIBERO, episodes)
    return root


@pytest.fixture(scope="module")
def libero_root(tmp_path_factory) -> Path:
    return libero_like_data(tmp_path_factory.mktemp("libero"))


def observations(n: int) -> list[dict]:
    rng = np.random.default_rng(1)
    return [
        {
            "full_image": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
            "wrist_image": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
            "state": rng.normal(size=8),
            "instruction": INSTRUCTIONS[i % 2],
            "suite": "libero_spatial",
        }
        for i in range(n)
    ]


def trained(cfg: FinetuneConfig, monkeypatch) -> tuple[Path, torch.nn.Module]:
    """Fine-tune; the run directory and the policy as it was in memory at the last save."""
    runs = []
    original_save = finetune_module.save
    monkeypatch.setattr(finetune_module, "save", lambda run: runs.append(run) or original_save(run))
    run_dir = finetune_module.finetune(cfg)
    return run_dir, unwrap(runs[-1].state.model)


@pytest.mark.parametrize("mode", ["full", "lora", "lora_merged"])
def test_eval_loads_each_step_folder_a_run_writes_and_acts_as_the_trained_policy(
    libero_root, tmp_path, monkeypatch, mode
):
    configs = write_tokenizer(qwen_like_bpe(), tmp_path / "configs", as_json=False)  # HF tokenizer files
    processor = {"means": [[0.4, 0.5, 0.6], [0.5, 0.5, 0.5]], "stds": [[0.2, 0.25, 0.3], [0.5, 0.5, 0.5]]}
    (configs / "preprocessor_config.json").write_text(json.dumps(processor))
    cfg = FinetuneConfig(
        model="tiny",
        data_root_dir=libero_root,
        dataset_name=LIBERO,
        run_root_dir=tmp_path / "runs",
        batch_size=4,
        max_steps=2,
        save_freq=100,
        image_aug=False,
        learning_rate=1e-2,
        use_lora=mode != "full",
        lora_rank=4,
        merge_lora_during_training=mode == "lora_merged",
        config_file_path=str(configs) if mode == "lora" else "",
    )
    run_dir, policy = trained(cfg, monkeypatch)
    step_dir = run_dir / "step-000002"
    assert (run_dir / "base_vla").is_dir() == (mode != "full")
    chunk_policy, info = build_chunk_policy(LiberoCommand(pretrained_checkpoint=str(step_dir), device="cpu"))
    assert info["step"] == "2" and not info["head_input_bf16"]
    loaded = chunk_policy.policy
    if mode == "lora":  # the tokenizer and processor came with the step folder
        assert type(chunk_policy.tokenizer).__name__ == "HFQwenTokenizer"
        assert chunk_policy.normalization == ImageNormalization.from_processor_config(configs)
    reference = VLAAdapterChunkPolicy(
        policy,
        chunk_policy.tokenizer,
        chunk_policy.statistics,
        chunk_policy.unnorm_keys,
        normalization=chunk_policy.normalization,
    )
    batch = observations(3)
    tolerance = 1e-4 if mode == "lora_merged" else 1e-6  # merging W + s·B·A rounds differently
    np.testing.assert_allclose(
        chunk_policy.predict_chunks(batch), reference.predict_chunks(batch), atol=tolerance, rtol=tolerance
    )
    if mode == "lora":  # the adapters matter: the base alone acts otherwise
        data = make_batch(loaded.config, with_actions=False)
        with torch.no_grad(), adapters_disabled(loaded):
            base_actions = loaded(data).actions
        with torch.no_grad():
            assert not torch.allclose(base_actions, loaded(data).actions, atol=1e-4)


def test_a_lora_step_without_its_base_says_which_flag_to_pass(tmp_path):
    policy = tiny_policy()
    save_policy_checkpoint(apply_lora(policy, rank=2), tmp_path / "step-000004", step=4)
    with pytest.raises(ValueError, match="--base_vla_path.*<run>/base_vla/"):
        load_finetuned_checkpoint(tmp_path / "step-000004")


def test_unknown_step_lists_the_heads_there(tmp_path):
    directory = save_full_checkpoint(tmp_path / "c")
    with pytest.raises(FileNotFoundError, match=r"no action_head--7_checkpoint\.pt.*\['action_head--5_"):
        load_finetuned_checkpoint(directory, step=7)
    with pytest.raises(FileNotFoundError, match="no tokenizer in"):
        load_tokenizer([directory], vocab_size=1024)
