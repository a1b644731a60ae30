"""Every flag of VLA-Adapter's vla-scripts/finetune.py is honoured: implemented, or a checked no-op that
refuses the values it cannot honour; VLA-Adapter's README launch line runs; validation and W&B logging do
what the flags say."""

import ast
import dataclasses
import json
import re
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from craft_vla.cli.main import main, parse
from craft_vla.data.rlds import RLDSReader
from craft_vla.data.rlds_writer import write_rlds_dataset
from craft_vla.data.tokenizers import WordTokenizer
from craft_vla.models import build_policy, get_config
from craft_vla.models.prismatic import save_prismatic_vlm
from craft_vla.training import finetune as finetune_module
from craft_vla.training.checkpoint import load_checkpoint
from craft_vla.training.config import IMPLEMENTED, VLA_ADAPTER_FLAGS, FinetuneConfig
from craft_vla.training.finetune import build_run, finetune
from craft_vla.training.metrics import MetricsLogger, read_metrics
from craft_vla.training.validation import validation_metrics, validation_set

FLAGS_TSV = Path(__file__).parents[1] / "fixtures" / "vla_adapter_finetune_flags.tsv"
SOURCE = Path(__file__).parents[2] / "src" / "craft_vla"
LIBERO = "libero_spatial_no_noops"
INSTRUCTIONS = ("pick up the black bowl and place it on the plate", "pick up the bowl next to the cookie box")

# For each checked no-op flag: a value VLA-Adapter takes that means something craft-vla does not do.
MEANS_SOMETHING_ELSE = {
    "use_minivlm": False,
    "shuffle_buffer_size": 0,
    "use_l1_regression": False,
    "use_diffusion": True,
    "num_diffusion_steps": 0,
    "use_film": True,
    "phase1_path": "runs/phase1",
    "diffusion_sample_freq": 0,
    "phase": "Inference",
    "use_fz": True,  # with LoRA (the default): VLA-Adapter would save the adapter where the whole VLA goes
}

LAUNCH_LINE = (
    "--vlm_path {vlm} --config_file_path {configs} --data_root_dir {data} "
    "--dataset_name libero_spatial_no_noops --run_root_dir {runs} --use_film False --num_images_in_input 2 "
    "--use_proprio True --use_lora True --use_fz False --use_minivlm True --image_aug True "
    "--num_steps_before_decay 400000 --max_steps 2 --save_freq 5000 --save_latest_checkpoint_only False "
    "--merge_lora_during_training True --batch_size 16 --grad_accumulation_steps 1 --learning_rate 2e-4 "
    "--lora_rank 64 --use_pro_version True --wandb_entity E --wandb_project P --run_id_note N"
)


def vla_adapter_flags() -> dict[str, tuple[str, str]]:
    """{flag: (type, default)} of the fixture."""
    lines = FLAGS_TSV.read_text().splitlines()
    rows = [line.split("\t") for line in lines if line and not line.startswith("#")]
    assert rows[0] == ["flag", "type", "default"]
    return {flag: (kind, default) for flag, kind, default in rows[1:]}


def test_the_table_classifies_exactly_the_42_flags_of_vla_adapter():
    flags = vla_adapter_flags()
    assert len(flags) == 42
    assert set(VLA_ADAPTER_FLAGS) == set(flags)
    fields = {f.name for f in dataclasses.fields(FinetuneConfig)}
    assert set(flags) <= fields, sorted(set(flags) - fields)


def test_every_implemented_flag_is_read_by_the_code_outside_the_config():
    """An 'implemented' flag that no code reads would be accepted and ignored: what the table is to stop."""
    code = "\n".join(p.read_text() for p in SOURCE.rglob("*.py") if p.name != "config.py")
    unread = [
        flag
        for flag, use in VLA_ADAPTER_FLAGS.items()
        if use is IMPLEMENTED and not re.search(rf"\bcfg\.{flag}\b", code)
    ]
    assert unread == []


def value_of_its_type(flag: str, kind: str, default: str, tmp_path: Path):
    """VLA-Adapter's default where craft-vla accepts it, else a value of the flag's type that it accepts."""
    chosen = {
        "use_minivlm": True,  # VLA-Adapter's default False is the 7B OpenVLA backbone (refused)
        "resume": True,  # so that resum_vla_path and resume_step may be given
        "resume_step": 5,
        "resum_vla_path": str(tmp_path / "previous-run"),
        "run_id_note": "note",
        "run_id_override": "my-run",
        "data_root_dir": tmp_path / "rlds",
        "run_root_dir": tmp_path / "runs",
        "vlm_path": str(tmp_path / "vlm"),
        "config_file_path": str(tmp_path / "configs"),
    }
    if flag in chosen:
        return chosen[flag]
    value = ast.literal_eval(default)
    return float(value) if kind == "int" and isinstance(value, float) else value  # lr_warmup_steps: int = 0.1


def test_every_flag_of_vla_adapter_parses_with_a_value_of_its_type(tmp_path):
    values = {
        flag: value_of_its_type(flag, kind, default, tmp_path)
        for flag, (kind, default) in vla_adapter_flags().items()
    }
    argv = [token for flag, value in values.items() for token in (f"--{flag}", str(value))]
    cfg = parse("finetune", argv)  # validate() included
    for flag, value in values.items():
        assert getattr(cfg, flag) == value, flag


@pytest.mark.parametrize("flag", sorted(MEANS_SOMETHING_ELSE))
def test_a_no_op_flag_refuses_a_value_that_means_something_else(flag):
    assert {f for f, use in VLA_ADAPTER_FLAGS.items() if use is not IMPLEMENTED} == set(MEANS_SOMETHING_ELSE)
    cfg = FinetuneConfig(model="tiny")
    cfg.validate()
    with pytest.raises(ValueError, match=f"^--{flag} .*not supported"):
        dataclasses.replace(cfg, **{flag: MEANS_SOMETHING_ELSE[flag]}).validate()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ([], "pass --vlm_path DIR .* or --model PRESET .*'tiny'"),
        (["--model", "big"], "--model 'big' is not a preset"),
        (["--model", "tiny", "--val_freq", "0"], "--val_freq must be >= 1, got 0"),
        (["--model", "tiny", "--save_freq", "0"], "--save_freq must be >= 1, got 0"),
        (["--model", "tiny", "--max_steps", "0"], "--max_steps must be >= 1, got 0"),
        (["--model", "tiny", "--craft_lambda_max", "-1"], "--craft_lambda_max must be >= 0, got -1"),
        (["--model", "tiny", "--craft_cache_shard_size", "0"], "--craft_cache_shard_size must be >= 1"),
        (["--model", "tiny", "--craft_cache_max_samples", "-2"], "--craft_cache_max_samples must be >= 0"),
        (["--model", "tiny", "--craft_anchor_batch_size", "-1"], "--craft_anchor_batch_size must be >= 0"),
        (["--model", "tiny", "--num_images_in_input", "3"], "--num_images_in_input must be 1 .* or 2"),
        (["--model", "tiny", "--lr_warmup_steps", "2.5"], "--lr_warmup_steps must be a whole number"),
        (
            ["--model", "tiny", "--use_fz", "True"],
            "--use_fz True with --use_lora True is not supported.*freezes nothing",
        ),
        (
            ["--model", "tiny", "--freeze_vlm", "True"],
            "--freeze_vlm True trains no VLM weight.*--use_lora False",
        ),
        (
            ["--model", "tiny", "--use_lora", "False", "--merge_lora_during_training", "True"],
            "--merge_lora_during_training True merges LoRA adapters: pass --use_lora True",
        ),
        (["--model", "tiny", "--resume_step", "4"], "pass --resume True"),
    ],
)
def test_bad_values_are_refused_naming_the_flag(flags, message):
    with pytest.raises(ValueError, match=message):
        parse("finetune", flags)


def test_a_fractional_warm_up_below_one_step_means_none_as_in_vla_adapter():
    cfg = parse("finetune", ["--model", "tiny", "--lr_warmup_steps", "0.1"])
    assert cfg.lr_warmup_steps == 0.1 and int(cfg.lr_warmup_steps) == 0


def test_finetune_help_renders(capsys):
    """argparse formats help strings with %: a field comment holding one broke `craft-vla finetune --help`."""
    with pytest.raises(SystemExit) as exit_info:
        main(["finetune", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert all(f"--{flag}" in text for flag in VLA_ADAPTER_FLAGS)


def libero_episode(rng: np.random.Generator, steps: int, instruction: str) -> dict:
    """One episode with LIBERO's features: 2 cameras, 8-D state, 7-D actions (gripper -1 open / +1 close)."""
    base = rng.uniform(0, 255, size=(1, 32, 32, 3))
    images = np.clip(base + rng.normal(0, 20, size=(steps, 32, 32, 3)), 0, 255).astype(np.uint8)
    state = rng.normal(size=(steps, 8)).astype(np.float32)
    gripper = np.sign(rng.normal(size=(steps, 1)))
    action = np.concatenate([np.tanh(state[:, :6]), gripper], 1).astype(np.float32)
    return {
        "steps": {
            "observation": {"image": images, "wrist_image": images[:, ::-1].copy(), "state": state},
            "action": action,
            "language_instruction": instruction,
            "is_first": np.arange(steps) == 0,
            "is_last": np.arange(steps) == steps - 1,
        },
        "episode_metadata": {"file_path": f"synthetic/{instruction}"},
    }


def write_libero_like(root: Path, num_episodes: int, seed: int, val_episodes: int = 0) -> Path:
    """`root/libero_spatial_no_noops/1.0.0`: a 'train' split of 6-step episodes and, if asked, a 'val' one."""
    rng = np.random.default_rng(seed)
    episodes = [libero_episode(rng, 6, INSTRUCTIONS[e % 2]) for e in range(num_episodes + val_episodes)]
    data_dir = write_rlds_dataset(root, LIBERO, episodes[:num_episodes])
    if val_episodes:
        val_dir = write_rlds_dataset(root / "val", LIBERO, episodes[num_episodes:], split="val")
        for shard in val_dir.glob(f"{LIBERO}-val.*"):
            shutil.copy(shard, data_dir / shard.name)
        info = json.loads((data_dir / "dataset_info.json").read_text())
        info["splits"] += json.loads((val_dir / "dataset_info.json").read_text())["splits"]
        (data_dir / "dataset_info.json").write_text(json.dumps(info))
        shutil.rmtree(root / "val")
    return data_dir


@pytest.fixture(scope="module")
def libero_root(tmp_path_factory) -> Path:
    """6 training episodes and 2 validation episodes (12 samples: 3 batches of 4)."""
    root = tmp_path_factory.mktemp("libero")
    write_libero_like(root, num_episodes=6, seed=0, val_episodes=2)
    return root


def config(root: Path, tmp_path: Path, **overrides) -> FinetuneConfig:
    base = FinetuneConfig(
        model="tiny",
        data_root_dir=root,
        dataset_name=LIBERO,
        run_root_dir=tmp_path / "runs",
        batch_size=4,
        max_steps=4,
        save_freq=100,
        use_lora=False,
        image_aug=True,
        learning_rate=1e-3,
    )
    return dataclasses.replace(base, **overrides)


def test_validation_changes_nothing_the_training_sees(libero_root, tmp_path):
    plain = finetune(config(libero_root, tmp_path, run_id_override="plain"))
    validated = finetune(config(libero_root, tmp_path, run_id_override="val", use_val_set=True, val_freq=2))
    a, b = read_metrics(plain), read_metrics(validated)
    assert [r["loss"] for r in a] == [r["loss"] for r in b]  # bit for bit: same data, same random draws
    assert [r["step"] for r in b if "val/loss" in r] == [1, 3]  # after updates 2 and 4
    weights_a = load_file(str(plain / "step-000004" / "training_state" / "trainable.safetensors"))
    weights_b = load_file(str(validated / "step-000004" / "training_state" / "trainable.safetensors"))
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


def test_validation_loss_is_the_l1_of_the_trained_model_on_the_val_split(libero_root, tmp_path):
    cfg = config(libero_root, tmp_path, use_val_set=True, val_freq=4, image_aug=True)
    record = read_metrics(finetune(cfg))[-1]
    assert record["step"] == 3 and record["val/num_batches"] == 3
    # reference: the saved model, in eval mode, on all 12 un-augmented val samples in one batch
    run = build_run(dataclasses.replace(cfg, resume=True))  # the finished run's directory, set up again
    load_checkpoint(cfg.run_root_dir / run.run_dir.name / "step-000004", run.state, run.env)
    val = validation_set(run, [RLDSReader(libero_root / LIBERO / "1.0.0", split="val")])
    assert len(val.dataset) == 12
    batch = val.collate([val.dataset[i] for i in val.dataset.sample_ids])
    assert "pixel_values" in batch
    with torch.no_grad():
        policy = run.state.model.eval()
        expected = policy(batch).loss.item()
    assert record["val/loss"] == pytest.approx(expected, rel=1e-5)


def test_a_validation_pass_stops_after_the_batch_past_the_time_limit(libero_root, tmp_path, monkeypatch):
    cfg = config(libero_root, tmp_path, use_val_set=True, val_time_limit=5)
    run = build_run(cfg)
    val = validation_set(run, [RLDSReader(libero_root / LIBERO / "1.0.0", split="val")])
    clock = iter(range(0, 1000, 4))  # 4 s per call: the second batch ends past 5 s
    monkeypatch.setattr(finetune_module.time, "perf_counter", lambda: next(clock))
    assert validation_metrics(run, val)["val/num_batches"] == 2
    assert run.state.model.training  # back in training mode


def test_a_dataset_without_a_val_split_is_refused_naming_the_split_and_the_fix(tmp_path):
    root = tmp_path / "rlds"
    write_libero_like(root, num_episodes=2, seed=1)
    with pytest.raises(ValueError, match=r"'val' split.*no split 'val'.*--use_val_set False"):
        finetune(config(root, tmp_path, use_val_set=True))


def test_resum_vla_path_resumes_another_run_exactly(libero_root, tmp_path):
    whole = finetune(config(libero_root, tmp_path, run_id_override="whole", save_freq=2, image_aug=False))
    resumed = finetune(
        config(
            libero_root,
            tmp_path,
            run_id_override="resumed",
            image_aug=False,
            resume=True,
            resum_vla_path=str(whole / "step-000002"),
        )
    )
    a = load_file(str(whole / "step-000004" / "training_state" / "trainable.safetensors"))
    b = load_file(str(resumed / "step-000004" / "training_state" / "trainable.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (resumed / "step-000002").exists()  # started at step 2
    with pytest.raises(ValueError, match="holds step 2, not --resume_step 4"):
        finetune(
            config(
                libero_root,
                tmp_path,
                run_id_override="x",
                image_aug=False,
                resume=True,
                resum_vla_path=str(whole / "step-000002"),
                resume_step=4,
            )
        )
    with pytest.raises(FileNotFoundError, match="no complete craft-vla checkpoint"):
        finetune(
            config(libero_root, tmp_path, run_id_override="y", resume=True, resum_vla_path=str(tmp_path))
        )


class FakeWandb(types.ModuleType):
    """Records what a run sends to W&B."""

    def __init__(self) -> None:
        super().__init__("wandb")
        self.init_kwargs: dict = {}
        self.logged: list[tuple[int, dict]] = []

    def init(self, **kwargs):
        self.init_kwargs = kwargs
        return types.SimpleNamespace(
            log=lambda metrics, step: self.logged.append((step, dict(metrics))), finish=lambda: None
        )


@pytest.fixture
def fake_wandb(monkeypatch) -> FakeWandb:
    module = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module


def test_wandb_gets_every_nth_step_and_every_validation_and_the_file_every_step(tmp_path, fake_wandb):
    logger = MetricsLogger(tmp_path, wandb_project="p", wandb_log_freq=3)
    for step in range(7):
        logger.log(step, {"loss": float(step), **({"val/loss": 0.5} if step == 4 else {})})
    logger.close()
    expected = [(0, {"loss": 0.0}), (3, {"loss": 3.0}), (4, {"val/loss": 0.5}), (6, {"loss": 6.0})]
    assert fake_wandb.logged == expected
    assert [r["step"] for r in read_metrics(tmp_path)] == list(range(7))


def write_tiny_vlm_and_configs(tmp_path: Path) -> tuple[Path, Path]:
    """A Prismatic run dir of the tiny preset (config.json + checkpoints/latest-checkpoint.pt) and a configs
    dir with its tokenizer and preprocessor_config.json, laid out as VLA-Adapter's pretrained_models/."""
    torch.manual_seed(0)
    vlm_dir, configs = tmp_path / "prism-tiny", tmp_path / "configs"
    save_prismatic_vlm(
        build_policy(get_config("tiny")).vla,
        vlm_dir,
        llm_backbone_id="tiny-qwen2",
        extra_config={"craft_vla_preset": "tiny"},
    )
    configs.mkdir()
    prompts = [f"What action should the robot take to {i}?" for i in INSTRUCTIONS]
    WordTokenizer.from_texts(prompts).save(configs / "word_tokenizer.json")
    size = get_config("tiny").image_size
    (configs / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "PrismaticImageProcessor",
                "image_resize_strategy": "resize-naive",
                "input_sizes": [[3, size, size], [3, size, size]],
                "means": [[0.485, 0.456, 0.406], [0.5, 0.5, 0.5]],
                "stds": [[0.229, 0.224, 0.225], [0.5, 0.5, 0.5]],
                "use_fused_vision_backbone": True,
            }
        )
    )
    return vlm_dir, configs


def test_vla_adapter_readme_launch_line_runs(tmp_path, fake_wandb):
    """VLA-Adapter's LIBERO launch line, with local paths and --max_steps 2, on the tiny preset's layout."""
    vlm_dir, configs = write_tiny_vlm_and_configs(tmp_path)
    data = tmp_path / "libero"
    write_libero_like(data, num_episodes=4, seed=2)
    argv = LAUNCH_LINE.format(vlm=vlm_dir, configs=configs, data=data, runs=tmp_path / "outputs").split()
    assert main(["finetune", *argv]) == 0
    (run_dir,) = (tmp_path / "outputs").iterdir()
    assert run_dir.name.endswith("--N") and "+b16+" in run_dir.name
    assert [r["step"] for r in read_metrics(run_dir)] == [0, 1]
    assert (run_dir / "step-000002" / "training_state" / "state.pt").is_file()
    assert fake_wandb.init_kwargs["project"] == "P" and fake_wandb.init_kwargs["entity"] == "E"
    assert [step for step, _ in fake_wandb.logged] == [0]  # --wandb_log_freq 10 (VLA-Adapter's default)
