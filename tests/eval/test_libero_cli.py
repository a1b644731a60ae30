"""`craft-vla eval libero|compare` without the simulator: flags, policies, a whole run on the fake env."""

import importlib.util
import json

import draccus
import numpy as np
import pytest
from fake_libero import LineEnvFactory

import craft_vla.eval.libero as libero_eval
from craft_vla.cli.main import main
from craft_vla.eval.command import LiberoCommand, build_chunk_policy
from craft_vla.eval.libero import LiberoEvalConfig, evaluate_libero, video_suffix
from craft_vla.eval.libero_policy import RandomChunkPolicy, ReplayChunkPolicy
from craft_vla.eval.libero_suites import LiberoTask


def test_flags_parse_into_the_run_config():
    command = draccus.parse(
        config_class=LiberoCommand,
        args=[
            "--suite",
            "libero_spatial,LIBERO_spatial_swap",
            "--tasks",
            "0,3",
            "--center_crop",
            "false",
            "--num_envs",
            "4",
            "--policy",
            "random",
        ],
    )
    assert not command.center_crop
    assert command.suites() == ["libero_spatial", "libero_spatial_swap"]
    assert command.task_indices() == [0, 3] and command.num_envs == 4
    protocol = command.protocol()
    assert (
        protocol.settle_steps == 10 and protocol.num_open_loop_steps == 8 and protocol.env_resolution == 256
    )
    with pytest.raises(ValueError, match="0,3,7"):
        LiberoEvalConfig(tasks="first").task_indices()


def test_policy_choice(tmp_path):
    assert isinstance(build_chunk_policy(LiberoCommand(policy="random"))[0], RandomChunkPolicy)
    np.save(tmp_path / "a.npy", np.zeros((5, 7)))
    policy, info = build_chunk_policy(LiberoCommand(policy="replay", replay_actions=str(tmp_path / "a.npy")))
    assert isinstance(policy, ReplayChunkPolicy) and info["replay_actions"].endswith("a.npy")
    with pytest.raises(ValueError, match="--pretrained_checkpoint"):
        build_chunk_policy(LiberoCommand())
    with pytest.raises(ValueError, match="--policy must be one of"):
        build_chunk_policy(LiberoCommand(policy="oracle"))


def test_a_whole_run_writes_results_and_compare_prints_them(tmp_path, monkeypatch, capsys):
    tasks = [
        LiberoTask("libero_goal", i, f"task{i}", f"reach goal {i}", f"task{i}.bddl", "") for i in range(2)
    ]
    monkeypatch.setattr(libero_eval, "load_tasks", lambda suite: tasks)
    # trial k starts at x = 0 with goal 0.2 (k + 1): reached after 2 (k + 1) steps of 0.1 within 300 steps
    monkeypatch.setattr(
        libero_eval,
        "load_init_states",
        lambda task, n: np.array([[0.0, 0.2 * (k + 1) + 100 * task.index] for k in range(n)]),
    )
    replay = np.zeros((400, 7))
    replay[:, 0] = 0.1
    for name, policy in (
        ("still", ReplayChunkPolicy(np.zeros((1, 7)))),
        ("replay", ReplayChunkPolicy(replay)),
    ):
        config = LiberoEvalConfig(
            suite="libero_goal",
            num_trials_per_task=3,
            out_dir=tmp_path / name,
            progress=False,
            save_videos=1,
            video_format="gif",
        )
        evaluate_libero(policy, config, env_factory=LineEnvFactory())
    replay_doc = json.loads((tmp_path / "replay" / "results.json").read_text())
    assert [r["successes"] for r in replay_doc["tasks"]] == [3, 0]  # task 1's goals lie beyond 300 steps
    assert [e["steps"] for e in replay_doc["episodes"]] == [2, 4, 6, 300, 300, 300]
    assert replay_doc["config"]["protocol"]["settle_steps"] == 10 and replay_doc["timing"]["episodes"] == 6
    videos = sorted(p.name for p in (tmp_path / "replay" / "videos").iterdir())
    assert videos == ["libero_goal--task00--trial00.gif", "libero_goal--task01--trial00.gif"]
    assert main(["eval", "compare", str(tmp_path / "still"), str(tmp_path / "replay")]) == 0
    table = capsys.readouterr().out
    assert (
        "| libero_goal | 0: reach goal 0 | 0.0 % [0.0, 56.1] (0/3) | 100.0 % [43.9, 100.0] (3/3) | +100.0 |"
        in table
    )
    assert main(["eval"]) == 2 and main(["eval", "compare", "only-one", "two", "three"]) == 2


def test_video_format_choice():
    has_ffmpeg = importlib.util.find_spec("imageio_ffmpeg") is not None
    assert video_suffix("auto") == ("mp4" if has_ffmpeg else "gif") and video_suffix("gif") == "gif"
    if not has_ffmpeg:
        with pytest.raises(ImportError, match="--video_format gif"):
            video_suffix("mp4")
    with pytest.raises(ValueError, match="--video_format"):
        video_suffix("avi")
