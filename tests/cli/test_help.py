"""Every command's `--help` works and lists its choices; the flag conveniences mean what the docs say."""

import dataclasses
import typing

import pytest

from craft_vla.cli.main import COMMANDS, draccus_args, load, main, parse


def help_text(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_prints_its_help(name, capsys):
    text = help_text(capsys, [*name.split(), "--help"])
    assert f"usage: craft-vla {name}" in text
    assert "--config_path" in text  # every command reads a config file the same way


@pytest.mark.parametrize("group", sorted({n.split()[0] for n in COMMANDS if " " in n}))
def test_a_command_group_lists_its_commands(group, capsys):
    assert main([group, "--help"]) == 0
    text = capsys.readouterr().out
    assert all(name in text for name in COMMANDS if name.startswith(group + " "))


def test_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0 and main([]) == 0
    text = capsys.readouterr().out
    assert all(name in text for name in COMMANDS)


def test_help_lists_the_choices(capsys):
    from craft_vla.demo.methods import METHODS
    from craft_vla.eval.protocol import MAX_EPISODE_STEPS
    from craft_vla.sim.tasks import TASK_NAMES

    demo = help_text(capsys, ["demo", "--help"])
    assert all(m in demo for m in METHODS) and all(t in demo for t in TASK_NAMES) and "--quick" in demo
    libero = help_text(capsys, ["eval", "libero", "--help"])
    assert all(suite in libero for suite in MAX_EPISODE_STEPS) and "libero_spatial_swap" in libero
    generate = help_text(capsys, ["data", "generate", "--help"])
    assert all(t in generate for t in TASK_NAMES)


def test_demo_choices_are_the_registries():
    """The Literal types that make draccus list and check choices hold exactly the registries' names."""
    from craft_vla.demo.config import DemoConfig, Method, Task
    from craft_vla.demo.methods import METHODS
    from craft_vla.sim.tasks import TASK_NAMES

    assert set(typing.get_args(Method)) == set(METHODS)
    assert typing.get_args(Task) == TASK_NAMES
    assert {f.name for f in dataclasses.fields(DemoConfig)} >= {"methods", "tasks", "quick"}


def test_flag_conveniences():
    command = COMMANDS["demo"]
    config_class = load(command.config)
    flags, preset = draccus_args(
        command, config_class, ["--quick", "--methods", "sft_full", "craft", "--toy"]
    )
    assert flags == ["--quick", "true", "--methods", "[sft_full,craft]", "--toy", "true"]
    assert preset.endswith("quick.yaml")
    flags, _ = draccus_args(
        command, config_class, ["--seeds", "[1,2]", "--epsilon", "-1", "--quick", "false"]
    )
    assert flags == ["--seeds", "[1,2]", "--epsilon", "-1", "--quick", "false"]
    verify = parse("cache verify", ["some/dir"])
    assert str(verify.path) == "some/dir"
    compare = parse("eval compare", ["a", "b"])
    assert (str(compare.run_a), str(compare.run_b)) == ("a", "b")


def test_bad_input_is_one_line_and_a_nonzero_exit(capsys, tmp_path):
    assert main(["nonsense"]) == 2
    assert "unknown command 'nonsense'" in capsys.readouterr().err
    assert main(["demo", "--methods", "sft_full", "oracle"]) == 2
    err = capsys.readouterr().err
    assert "oracle" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["cache", "verify", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "no meta.json" in err and "Traceback" not in err
