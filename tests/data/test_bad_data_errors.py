import json

import numpy as np
import pytest

from craft_vla.data.dataset import SampleConfig, VLADataset
from craft_vla.data.image_codec import ImageDecodeError
from craft_vla.data.normalize import StatisticsError, load_dataset_statistics, save_dataset_statistics
from craft_vla.data.rlds import RLDSFormatError, RLDSReader
from craft_vla.data.rlds_writer import write_rlds_dataset
from craft_vla.data.statistics import compute_dataset_statistics
from craft_vla.data.tfrecord import TFRecordError
from craft_vla.data.tokenizers import WordTokenizer


def test_missing_features_json(libero_dir):
    (libero_dir / "features.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"features.json not found"):
        RLDSReader(libero_dir)


def test_missing_dataset_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected dataset_info.json"):
        RLDSReader(tmp_path / "nothing")


def test_truncated_shard_names_file_and_offset(libero_dir):
    shard = sorted(libero_dir.glob("*-of-*"))[1]
    data = shard.read_bytes()
    shard.write_bytes(data[:-100])
    with pytest.raises(TFRecordError, match=rf"{shard}: truncated record at byte offset \d+"):
        RLDSReader(libero_dir)


def test_shard_truncated_after_indexing_is_caught_on_read(libero_dir):
    reader = RLDSReader(libero_dir)
    shard = reader.shards[2]
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(TFRecordError, match=rf"{shard}: truncated record at byte offset 0"):
        reader.get_step(4, 0)


def test_features_json_with_wrong_action_dimension(libero_dir):
    path = libero_dir / "features.json"
    features = json.loads(path.read_text())
    steps = features["featuresDict"]["features"]["steps"]["sequence"]["feature"]["featuresDict"]["features"]
    steps["action"]["tensor"]["shape"]["dimensions"] = ["6"]
    path.write_text(json.dumps(features))
    with pytest.raises(
        RLDSFormatError,
        match=(
            r"tfrecord-00000-of-00003: record at byte offset 0: "
            r"feature .steps/action. has 35 values, not a multiple"
        ),
    ):
        RLDSReader(libero_dir)


def test_statistics_with_wrong_action_dimension(libero_dir, tmp_path):
    reader = RLDSReader(libero_dir)
    stats = compute_dataset_statistics(reader, "libero").to_json()
    for key in ("mean", "std", "max", "min", "q01", "q99", "mask"):
        stats["action"][key] = stats["action"][key][:6]
    path = tmp_path / "dataset_statistics.json"
    path.write_text(json.dumps({reader.name: stats}))
    with pytest.raises(StatisticsError, match=r"action dimension 7 .* does not match the statistics \(6"):
        VLADataset(
            [reader],
            WordTokenizer.from_texts(["x"]),
            SampleConfig(image_size=16),
            statistics=load_dataset_statistics(path),
            statistics_source=str(path),
        )


def test_missing_statistics(libero_dir, tmp_path):
    reader = RLDSReader(libero_dir)
    path = save_dataset_statistics(tmp_path, {"other_dataset": compute_dataset_statistics(reader, "libero")})
    with pytest.raises(
        StatisticsError,
        match=rf"{path}: no statistics for dataset 'libero_toy_no_noops'; found \['other_dataset'\]",
    ):
        VLADataset(
            [reader],
            WordTokenizer.from_texts(["x"]),
            statistics=load_dataset_statistics(path),
            statistics_source=str(path),
        )
    with pytest.raises(StatisticsError, match="not found"):
        load_dataset_statistics(tmp_path / "missing.json")
    path.write_text(json.dumps({"d": {"action": {"q01": [0.0]}}}))
    with pytest.raises(StatisticsError, match=r"missing statistics \['min', 'max', 'q99'\]"):
        load_dataset_statistics(path)


def test_undecodable_image_names_file_episode_step_and_feature(tmp_path, make_episode):
    episode = make_episode(np.random.default_rng(0), 3, "push the cube")
    stored = [b"\xff\xd8 not a jpeg", b"", b"garbage"]
    episode["steps"]["observation"]["image"] = stored
    from craft_vla.data.rlds_writer import infer_features

    features = infer_features(make_episode(np.random.default_rng(0), 3, "push the cube"))
    path = write_rlds_dataset(tmp_path, "broken", [episode], features=features)
    reader = RLDSReader(path)
    with pytest.raises(
        ImageDecodeError,
        match=r"broken-train.tfrecord-00000-of-00001: episode 0 step 1 "
        r"steps/observation/image: could not decode",
    ):
        reader.get_step(0, 1)


def test_a_nan_action_stops_statistics_and_inspect_naming_episode_and_step(tmp_path, episodes, capsys):
    from craft_vla.cli.main import main

    episodes[3]["steps"]["action"][2, 4] = np.nan
    path = write_rlds_dataset(tmp_path / "rlds", "libero_toy_no_noops", episodes, num_shards=2)
    with pytest.raises(ValueError, match=r"episode 3, step 2: action\[4\] is nan"):
        compute_dataset_statistics(RLDSReader(path), "libero")
    assert main(["data", "inspect", str(path)]) == 1
    err = capsys.readouterr().err
    assert "episode 3, step 2" in err and "Traceback" not in err
