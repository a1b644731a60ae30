"""DemoConfig refuses settings the embedded suite cannot run, naming the fix."""

import pytest

from craft_vla.demo.config import DemoConfig


def test_default_world_has_one_object_and_zero_means_the_suite():
    assert DemoConfig().world().max_objects == 1 == DemoConfig().world().min_objects
    suite = DemoConfig(objects=0).world()
    assert (suite.min_objects, suite.max_objects) == (3, 5)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"tasks": ("stack",), "objects": 1}, "--objects 2"),
        ({"tasks": ("fly",)}, "unknown \\['fly'\\]"),
        ({"tasks": ()}, "choose from"),
        ({"objects": -1}, "--objects must be >= 0"),
        ({"precision": "fp16"}, "--precision must be one of auto, bf16, fp32"),
        ({"execute_steps": 0}, "--execute_steps must be >= 1"),
        ({"action_noise": -0.1}, "--action_noise must be >= 0"),
        ({"raw_layer": 3}, "use --raw_layers 3 for that layer alone"),
    ],
)
def test_bad_settings_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        DemoConfig(**overrides)


def test_a_reference_task_runs_with_two_objects():
    assert DemoConfig(tasks=("stack", "reach"), objects=2).world().min_objects == 2


def test_the_command_line_names_the_bad_setting_without_a_traceback(capsys):
    from craft_vla.cli.main import main

    assert main(["demo", "--quick", "--tasks", "stack"]) == 2
    err = capsys.readouterr().err
    assert "need a reference object: use --objects 2" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--epsilon", "-1"], "--epsilon must be > 0; got -1"),
        (["--anchor_batch_size", "-4"], "--anchor_batch_size"),
        (["--lambda_max", "-3"], "--lambda_max must be >= 0"),
        (["--steps", "0"], "--steps must be >= 1"),
    ],
)
def test_bad_flags_fail_before_any_work_naming_the_flag(flags, named, capsys, tmp_path):
    from craft_vla.cli.main import main

    assert main(["demo", "--cache_dir", str(tmp_path / "cache"), *flags]) == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()  # refused before data generation or pretraining


def test_quick_preset_is_the_yaml_and_flags_override_it():
    quick = DemoConfig.preset("quick")
    assert (quick.quick, quick.seeds, quick.methods, quick.steps) == (True, (0,), ("sft_full", "craft"), 60)
    assert DemoConfig.preset("quick", steps=5).steps == 5


def test_full_preset_runs_every_method_and_refuses_quick_beside_it(capsys):
    from craft_vla.cli.main import main, parse
    from craft_vla.demo.methods import METHODS

    full = parse("demo", ["--full"])
    # every method but the issue-16 experiment craft_correction (docs/method.md)
    assert (full.protocol, set(full.methods), full.seeds) == (
        "full",
        set(METHODS) - {"craft_correction"},
        (0, 1, 2),
    )
    assert parse("demo", []).methods == ("sft_full", "craft") and parse("demo", []).protocol == "default"
    assert main(["demo", "--full", "--quick"]) == 2
    assert "choose one" in capsys.readouterr().err


def test_method_cost_puts_retention_runs_first_and_the_frozen_vlm_last_of_the_trained():
    from craft_vla.demo.methods import METHODS, POST_HOC, method_cost

    assert (
        method_cost("craft")
        == method_cost("fixed_penalty")
        == 2.0
        > method_cost("sft_full")
        > method_cost("frozen_vlm")
    )
    assert method_cost("craft", anchor_fraction=0.25) == 1.25
    trained = [m for m in METHODS if m not in POST_HOC]
    assert sorted(trained, key=lambda m: -method_cost(m))[-1] == "frozen_vlm"
    assert method_cost("wise_ft") < method_cost("frozen_vlm")  # evaluations only


def test_lambda_cap_reaches_the_trainer_and_zero_means_none(tmp_path):
    from craft_vla.demo.run import base_finetune_config

    assert (
        base_finetune_config(
            DemoConfig(lambda_max=2), tmp_path, tmp_path, tmp_path, tmp_path
        ).craft_lambda_max
        == 2.0
    )
    assert base_finetune_config(DemoConfig(), tmp_path, tmp_path, tmp_path, tmp_path).craft_lambda_max is None


def test_precision_and_adam_beta2_reach_the_trainer(tmp_path):
    from craft_vla.demo.run import base_finetune_config

    cfg = base_finetune_config(
        DemoConfig(precision="bf16", adam_beta2=0.95), tmp_path, tmp_path, tmp_path, tmp_path
    )
    assert (cfg.precision, cfg.adam_beta2) == ("bf16", 0.95)
    assert base_finetune_config(DemoConfig(), tmp_path, tmp_path, tmp_path, tmp_path).precision == "fp32"


def test_cached_build_builds_once_and_yields_to_a_concurrent_run(tmp_path):
    from craft_vla.data.cache_dir import cached_build

    def build(tmp):
        (tmp / "made_here").write_text("1")
        (tmp_path / "key").mkdir()  # another run renamed its complete result into place meanwhile
        (tmp_path / "key" / "made_there").write_text("1")

    final = cached_build(tmp_path / "key", build)
    assert sorted(p.name for p in final.iterdir()) == ["made_there"]
    assert [p.name for p in tmp_path.iterdir()] == ["key"]  # no temporary directory left behind
    assert cached_build(tmp_path / "key", lambda tmp: pytest.fail("rebuilt a cached result")) == final


def test_auto_precision_is_bf16_exactly_where_the_cpu_has_bf16_matrix_instructions(monkeypatch):
    import torch

    for flags, expected in (
        ({"avx512_bf16": True}, "bf16"),
        ({"amx_bf16": True}, "bf16"),
        ({"avx2": True}, "fp32"),
    ):
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda flags=flags: flags, raising=False)
        assert DemoConfig(precision="auto").resolved_precision() == expected
        assert (
            DemoConfig().resolved_precision() == "fp32"
        )  # the default: the protocol the README's table measured


def test_action_noise_reaches_the_training_demonstrations_only(tmp_path):
    from craft_vla.demo.run import DATASET, VAL_DATASET, generate_data

    small = {"cache_dir": tmp_path, "episodes_per_task": 2, "val_episodes_per_task": 1, "workers": 1}
    clean, noisy = generate_data(DemoConfig(**small)), generate_data(DemoConfig(**small, action_noise=0.3))
    assert clean != noisy  # a cache key of its own

    def description(root, name):
        return (root / name / "1.0.0" / "dataset_info.json").read_text()

    assert "action noise 0.3" in description(noisy, DATASET)
    assert "action noise 0.0" in description(noisy, VAL_DATASET) and "action noise 0.0" in description(
        clean, DATASET
    )


def test_reference_inputs_are_written_only_where_craft_reads_its_anchors_on_them(tmp_path):
    from craft_vla.demo.run import REFERENCE_DATASET, generate_data

    small = {"cache_dir": tmp_path, "episodes_per_task": 2, "val_episodes_per_task": 1, "workers": 1}
    plain = generate_data(DemoConfig(**small))
    reference = generate_data(DemoConfig(**small, anchor_inputs="reference", reference_scenes=3))
    assert plain != reference and not (plain / REFERENCE_DATASET).exists()
    assert (reference / REFERENCE_DATASET / "1.0.0" / "dataset_info.json").exists()


def test_each_retention_method_gets_the_cache_of_its_own_anchors(tmp_path, monkeypatch):
    """`craft` anchors what the flags name on the inputs they name, `craft_seed` and the ablations the seed's
    features on the demonstrations: one cache per anchor set, each built once; each method's dual step from
    its own ε, and the ablations keep theirs at 0."""
    import json

    import craft_vla.training.build_cache as build_cache_module
    from craft_vla.demo import run

    built = []

    def fake_build(cfg):  # records the anchors asked for and writes the meta.json a build would
        built.append((cfg.craft_parts, cfg.craft_pool, cfg.craft_raw_layers, cfg.craft_anchor_dataset_name))
        root = tmp_path / cfg.craft_cache_path
        root.mkdir(parents=True)
        spread = (
            {"all": 41.0, "raw": 40.0, "text": 1.0}
            if cfg.craft_text
            else {"all": 50.0, "raw": 40.0, "aq": 10.0}
        )
        (root / "meta.json").write_text(json.dumps({"spread": spread}))

    monkeypatch.setattr(build_cache_module, "build_cache", fake_build)
    methods = ("sft_full", "craft", "craft_seed", "projection_only")
    cfg = DemoConfig(methods=methods, raw_layers=(1, 2), cache_dir=tmp_path)
    base = run.base_finetune_config(
        cfg, tmp_path / "data", tmp_path / "snapshot", tmp_path / "runs", tmp_path
    )
    anchors = run.anchor_caches(cfg, base, tmp_path / "snapshot", tmp_path / "data")
    assert sorted(anchors) == ["craft", "craft_seed", "projection_only"]
    assert built == [("raw", "tokens", (1, 2), ""), ("both", "mean", (), "")]
    assert anchors["craft_seed"]["craft_cache_path"] == anchors["projection_only"]["craft_cache_path"]
    assert anchors["craft"]["craft_cache_path"] != anchors["craft_seed"]["craft_cache_path"]
    assert anchors["craft"]["craft_dual_lr"] == pytest.approx(0.1 / (0.1 * 2))  # balanced: ε 0.1 per part
    assert anchors["craft_seed"]["craft_dual_lr"] == pytest.approx(0.1 / (0.2 * 50.0))  # ε = 0.2 × S_all
    craft_job = run.job_config(cfg, base, "craft", 0, 1, anchors)
    assert (craft_job.craft_text, craft_job.craft_retention_scale) == (True, "action")
    seed_job = run.job_config(cfg, base, "craft_seed", 0, 1, anchors)
    assert (seed_job.craft_parts, seed_job.craft_pool, seed_job.craft_raw_layers) == ("both", "mean", ())
    assert (seed_job.craft_anchor_dataset_name, seed_job.craft_retention_scale) == ("", "raw")
    assert run.job_config(cfg, base, "projection_only", 0, 1, anchors).craft_dual_lr == 0.0
    again = run.anchor_caches(cfg, base, tmp_path / "snapshot", tmp_path / "data")
    assert again == anchors and len(built) == 2  # reused
    on_reference = DemoConfig(methods=("craft",), anchor_inputs="reference", cache_dir=tmp_path)
    base = run.base_finetune_config(
        on_reference, tmp_path / "data", tmp_path / "snapshot", tmp_path / "runs", tmp_path
    )
    run.anchor_caches(on_reference, base, tmp_path / "snapshot", tmp_path / "data")
    assert built[-1][-1] == run.REFERENCE_DATASET and len(built) == 3  # a cache of its own


def test_wise_ft_needs_the_sft_runs_it_starts_from():
    with pytest.raises(ValueError, match="wise_ft starts from the runs of sft_full: add sft_full"):
        DemoConfig(methods=("craft", "wise_ft"))
    with pytest.raises(ValueError, match="--wise_ft_alphas must lie in"):
        DemoConfig(methods=("sft_full", "wise_ft"), wise_ft_alphas=(1.5,))
