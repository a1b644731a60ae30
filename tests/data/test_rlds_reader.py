import json
import os
import pickle

import numpy as np
import pytest

from craft_vla.data.image_codec import encode_image
from craft_vla.data.rlds import RLDSReader, resolve_dataset_dir
from craft_vla.data.rlds_writer import write_rlds_dataset

NAME = "libero_toy_no_noops"


def test_on_disk_layout_is_tfds(libero_dir):
    assert sorted(os.listdir(libero_dir)) == [
        "dataset_info.json",
        "features.json",
        *(f"{NAME}-train.tfrecord-0000{i}-of-00003" for i in range(3)),
    ]
    info = json.loads((libero_dir / "dataset_info.json").read_text())
    assert info["name"] == NAME and info["version"] == "1.0.0" and info["fileFormat"] == "tfrecord"
    assert info["splits"][0]["shardLengths"] == ["2", "2", "1"]
    features = json.loads((libero_dir / "features.json").read_text())
    steps = features["featuresDict"]["features"]["steps"]
    assert steps["pythonClassName"] == "tensorflow_datasets.core.features.dataset_feature.Dataset"
    assert steps["sequence"]["length"] == "-1"
    step = steps["sequence"]["feature"]["featuresDict"]["features"]
    assert step["observation"]["featuresDict"]["features"]["image"]["image"] == {
        "shape": {"dimensions": ["32", "32", "3"]},
        "dtype": "uint8",
        "encodingFormat": "jpeg",
    }
    assert step["action"]["tensor"] == {
        "shape": {"dimensions": ["7"]},
        "dtype": "float32",
        "encoding": "none",
    }
    assert step["is_first"]["pythonClassName"].endswith("scalar.Scalar")
    assert step["is_first"]["tensor"] == {"shape": {}, "dtype": "bool", "encoding": "none"}
    assert step["language_instruction"] == {
        "pythonClassName": "tensorflow_datasets.core.features.text_feature.Text",
        "text": {},
    }


def test_read_back_field_by_field(libero_dir, episodes):
    reader = RLDSReader(libero_dir)
    assert (reader.name, reader.version, reader.num_episodes) == (NAME, "1.0.0", 5)
    assert reader.episode_lengths.tolist() == [5, 9, 3, 7, 4] and reader.num_steps == 28
    for e, original in enumerate(episodes):
        got = reader.read_episode(e)
        assert got["episode_metadata"] == original["episode_metadata"]
        want_steps, got_steps = original["steps"], got["steps"]
        for key in ("action", "reward", "discount", "is_first", "is_last", "is_terminal"):
            assert got_steps[key].dtype == want_steps[key].dtype
            np.testing.assert_array_equal(got_steps[key], want_steps[key])
        for key in ("state", "joint_state"):
            np.testing.assert_array_equal(got_steps["observation"][key], want_steps["observation"][key])
        assert got_steps["language_instruction"] == [want_steps["language_instruction"]] * len(
            want_steps["action"]
        )
        raw = reader.episode_record(e).values
        for key in ("image", "wrist_image"):
            original_images = want_steps["observation"][key]
            assert raw[f"steps/observation/{key}"] == [encode_image(im) for im in original_images]
            decoded = got_steps["observation"][key]
            assert decoded.shape == original_images.shape and decoded.dtype == np.uint8
            assert np.abs(decoded.astype(int) - original_images).mean() < 3  # JPEG
        step = reader.get_step(e, 1)
        np.testing.assert_array_equal(step["observation"]["image"], got_steps["observation"]["image"][1])
        assert step["language_instruction"] == want_steps["language_instruction"]
        assert bool(step["is_first"]) is False


def test_png_images_are_lossless(tmp_path, make_episode):
    episode = make_episode(np.random.default_rng(1), 4, "stack the blocks", image_size=16)
    episode["steps"]["observation"]["image"] = np.random.default_rng(2).integers(
        0, 256, (4, 16, 16, 3), dtype=np.uint8
    )
    path = write_rlds_dataset(tmp_path, "sim_toy", [episode], image_format="png")
    got = RLDSReader(path).read_episode(0)
    np.testing.assert_array_equal(
        got["steps"]["observation"]["image"], episode["steps"]["observation"]["image"]
    )


def test_resolve_dataset_dir_forms(libero_dir):
    root = libero_dir.parent.parent
    assert resolve_dataset_dir(root, NAME) == libero_dir
    assert resolve_dataset_dir(root / NAME) == libero_dir
    assert resolve_dataset_dir(libero_dir) == libero_dir


def test_index_is_cached_and_invalidated(libero_dir, tmp_path, monkeypatch):
    reader = RLDSReader(libero_dir, index_dir=tmp_path / "idx")
    assert len(list((tmp_path / "idx").glob("*.json"))) == 1

    def no_rebuild(self):
        raise AssertionError("index rebuilt although the files did not change")

    monkeypatch.setattr(RLDSReader, "_build_index", no_rebuild)
    assert (
        RLDSReader(libero_dir, index_dir=tmp_path / "idx").episode_lengths.tolist()
        == reader.episode_lengths.tolist()
    )
    monkeypatch.undo()
    shard = reader.shards[0]
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))
    rebuilt = []
    original = RLDSReader._build_index
    monkeypatch.setattr(RLDSReader, "_build_index", lambda self: rebuilt.append(1) or original(self))
    RLDSReader(libero_dir, index_dir=tmp_path / "idx")
    assert rebuilt == [1]


def test_reader_pickles_and_caches_last_episode(libero_dir):
    reader = RLDSReader(libero_dir, episode_cache_size=2)
    reader.get_step(1, 0)
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._fds == {} and len(clone._cache) == 0
    np.testing.assert_array_equal(clone.get_step(1, 3)["action"], reader.get_step(1, 3)["action"])
    assert reader.episode_record(1) is reader.episode_record(1)
    with pytest.raises(IndexError, match="step 9 out of range"):
        reader.get_step(1, 9)


def test_jpeg_decoding_modes():
    import io

    from PIL import Image

    from craft_vla.data.image_codec import decode_image

    rng = np.random.default_rng(3)
    image = np.clip(np.linspace(0, 255, 48)[None, :, None] + rng.normal(0, 20, (48, 48, 3)), 0, 255).astype(
        np.uint8
    )
    data = encode_image(image)
    accurate = decode_image(data, jpeg_dct="accurate")
    np.testing.assert_array_equal(accurate, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    fast = decode_image(data)  # TensorFlow's default (fast integer DCT); the tf tests pin it to TF's pixels
    assert fast.shape == accurate.shape and np.abs(fast.astype(int) - accurate).max() <= 16
