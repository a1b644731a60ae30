"""Expert demonstrations written as RLDS and read back with the project's TF-free reader."""

from __future__ import annotations

import numpy as np
import pytest

from craft_vla.data.rlds import RLDSReader
from craft_vla.sim import demonstrations
from craft_vla.sim.demonstrations import episode_specs, record_demonstration
from craft_vla.sim.env import TabletopEnv
from craft_vla.sim.tasks import TASK_NAMES

TASKS = ("stack", "push_side", "reach")


def generate(out_dir, *args, **kwargs):
    """`craft-vla data generate`'s library call, with the flags as arguments."""
    return demonstrations.generate(demonstrations.GenerateConfig(out_dir, *args, **kwargs))


def test_specs_are_i_major():
    assert episode_specs(("a", "b"), 2, 10) == [("a", 10), ("b", 10), ("a", 11), ("b", 11)]


def test_episode_dict_layout():
    episode = record_demonstration(TabletopEnv(32), "stack", 5)
    steps = episode["steps"]
    num = len(steps["action"])
    assert 5 < num < 60
    assert (
        steps["observation"]["image"].shape == (num, 32, 32, 3)
        and steps["observation"]["image"].dtype == np.uint8
    )
    assert steps["observation"]["wrist_image"].shape == (num, 32, 32, 3)
    assert (
        steps["observation"]["state"].shape == (num, 4) and steps["observation"]["state"].dtype == np.float32
    )
    assert steps["action"].shape == (num, 3) and steps["action"].dtype == np.float32
    assert np.abs(steps["action"]).max() <= 1.0 and set(np.unique(steps["action"][:, 2])) <= {-1.0, 1.0}
    np.testing.assert_array_equal(steps["reward"], (np.arange(num) == num - 1).astype(np.float32))
    assert steps["is_first"][0] and not steps["is_first"][1:].any()
    assert steps["is_last"][-1] and steps["is_terminal"][-1] and not steps["is_last"][:-1].any()
    assert episode["episode_metadata"]["file_path"] == "tabletop/train/stack/5"
    # replaying the recorded actions from the same reset reproduces the states and ends in success
    env = TabletopEnv(32)
    obs = env.reset("stack", 5)
    for t, action in enumerate(steps["action"]):
        np.testing.assert_array_equal(obs["state"], steps["observation"]["state"][t])
        np.testing.assert_array_equal(obs["image"], steps["observation"]["image"][t])
        obs, _, done, _ = env.step(action)
    assert done and env.success()


def test_noisy_demonstrations_record_clean_labels_and_still_succeed():
    clean = record_demonstration(TabletopEnv(32), "place_side", 2)["steps"]
    noisy = record_demonstration(TabletopEnv(32), "place_side", 2, action_noise=0.3)["steps"]
    np.testing.assert_array_equal(noisy["action"][0], clean["action"][0])  # same first state, same label
    num = min(len(clean["action"]), len(noisy["action"]))
    assert not np.array_equal(clean["observation"]["state"][:num], noisy["observation"]["state"][:num])
    assert np.abs(noisy["action"]).max() <= 1.0 and set(np.unique(noisy["action"][:, 2])) <= {-1.0, 1.0}


def test_generated_dataset_reads_back_through_the_rlds_reader(tmp_path):
    report = generate(
        tmp_path / "data",
        num_episodes_per_task=2,
        image_size=32,
        seed=7,
        workers=1,
        tasks=TASKS,
        progress=False,
    )
    assert report.episodes == 6 and not report.failed and report.bytes_on_disk > 0
    reader = RLDSReader(report.path, index_dir=tmp_path / "index")
    assert reader.num_episodes == 6 and reader.num_steps == report.steps
    env = TabletopEnv(32)
    for index, (task, seed) in enumerate(episode_specs(TASKS, 2, 7)):
        stored = reader.read_episode(index)
        fresh = record_demonstration(env, task, seed)
        assert stored["episode_metadata"]["file_path"] == f"tabletop/train/{task}/{seed}"
        np.testing.assert_array_equal(stored["steps"]["action"], fresh["steps"]["action"])
        np.testing.assert_array_equal(
            stored["steps"]["observation"]["state"], fresh["steps"]["observation"]["state"]
        )
        assert stored["steps"]["language_instruction"] == [fresh["steps"]["language_instruction"]] * len(
            fresh["steps"]["action"]
        )
        jpeg_error = np.abs(
            stored["steps"]["observation"]["image"].astype(int) - fresh["steps"]["observation"]["image"]
        ).mean()
        assert jpeg_error < 4.0
    with pytest.raises(FileExistsError):
        generate(tmp_path / "data", num_episodes_per_task=1, image_size=32, tasks=TASKS, progress=False)


def test_worker_processes_write_the_same_dataset(tmp_path):
    one = generate(tmp_path / "one", 2, 32, seed=1, workers=1, tasks=TASKS, progress=False)
    two = generate(tmp_path / "two", 2, 32, seed=1, workers=2, tasks=TASKS, progress=False)
    shard = "tabletop-train.tfrecord-00000-of-00001"
    assert (one.path / shard).read_bytes() == (two.path / shard).read_bytes()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_episodes_per_task": 0}, "at least 1"),
        ({"split": "test"}, "unknown split"),
        ({"tasks": ("juggle",)}, "unknown tasks"),
    ],
)
def test_generate_refuses_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(tmp_path, **{"num_episodes_per_task": 1, **kwargs})


def test_every_task_is_generated_by_default(tmp_path):
    report = generate(tmp_path, 1, 16, progress=False, split="heldout")
    assert report.episodes == len(TASK_NAMES) and report.path.parent.name == "tabletop_heldout"


def test_world_config_reaches_the_generated_episodes(tmp_path):
    """`config` changes the recorded scenes: one-object worlds give the first
    frames of single-object resets."""
    from craft_vla.sim.demonstrations import write_demonstrations
    from craft_vla.sim.world import WorldConfig

    world = WorldConfig(min_objects=1, max_objects=1)
    report = write_demonstrations(tmp_path, 2, 32, tasks=("reach",), config=world, name="one", progress=False)
    first_images = [ep["steps"]["observation"]["image"][0] for ep in RLDSReader(report.path)]
    single, default = TabletopEnv(32, config=world), TabletopEnv(32)

    def gap(a: np.ndarray, b: np.ndarray) -> float:  # images are stored as JPEG: compare up to its loss
        return float(np.abs(a.astype(np.float64) - b).mean())

    for seed, image in enumerate(first_images):
        ours, suite = (
            gap(image, single.reset("reach", seed)["image"]),
            gap(image, default.reset("reach", seed)["image"]),
        )
        assert ours < 3.0 and suite > 2 * ours, (ours, suite)


def test_perception_episodes_read_back_as_one_step_episodes_of_their_questions(tmp_path):
    from craft_vla.data.rlds_writer import write_rlds_dataset
    from craft_vla.sim import make_perception_set
    from craft_vla.sim.perception import perception_episodes

    scenes = make_perception_set(3, 2, name="reference", image_size=32)
    path = write_rlds_dataset(tmp_path, "reference", perception_episodes(scenes, "reference"))
    reader = RLDSReader(path, index_dir=tmp_path / "index")
    assert reader.num_episodes == reader.num_steps == 6
    for index, (scene, question) in enumerate(scenes.flat()):
        stored = reader.read_episode(index)["steps"]
        assert stored["language_instruction"] == [question.text]
        np.testing.assert_array_equal(stored["observation"]["state"], scenes.states[scene : scene + 1])
        assert not stored["action"].any()
        jpeg_error = np.abs(stored["observation"]["wrist_image"][0].astype(int) - scenes.wrist_images[scene])
        assert jpeg_error.mean() < 4.0
