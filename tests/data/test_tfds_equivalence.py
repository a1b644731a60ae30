"""Our reader decodes every field of every step exactly as TensorFlow Datasets does (marker `tf`).

TensorFlow lives in its own environment; point CRAFT_VLA_TF_PYTHON at its interpreter:

    CRAFT_VLA_TF_PYTHON=/work/tfvenv/bin/python .venv/bin/pytest tests/data -m tf

Datasets are built by TFDS itself (benchmarks/data/tfds_libero_like.py: a GeneratorBasedBuilder
with LIBERO's features and one with other dtypes) and by our writer; TFDS decodes each into an
.npz, and our reader must give identical values, dtypes and shapes (JPEG pixels included).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from craft_vla.data.nesting import flatten_nested
from craft_vla.data.rlds import RLDSReader
from craft_vla.data.rlds_writer import write_rlds_dataset

pytestmark = pytest.mark.tf
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "tfds_libero_like.py"


def tf_python() -> str:
    if os.environ.get("CRAFT_VLA_TF_PYTHON"):
        return os.environ["CRAFT_VLA_TF_PYTHON"]
    if importlib.util.find_spec("tensorflow_datasets") is not None:
        return sys.executable
    pytest.skip("needs tensorflow-datasets: set CRAFT_VLA_TF_PYTHON to a Python that has it")


def run_tfds(*args: str) -> None:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run([tf_python(), str(SCRIPT), *args], check=True, env=env, capture_output=True, timeout=600)


def assert_same_as_tfds(data_dir: Path, dump: Path) -> int:
    """Compare every field of every step; returns the number of values compared."""
    expected = np.load(dump)
    reader = RLDSReader(data_dir)
    episodes = {key.split("/", 1)[0] for key in expected.files}
    assert len(episodes) == reader.num_episodes
    compared = 0
    for e in range(reader.num_episodes):
        ours = flatten_nested(reader.read_episode(e))
        theirs = {k.split("/", 1)[1]: expected[k] for k in expected.files if k.startswith(f"e{e}/")}
        assert sorted(ours) == sorted(theirs)
        for key, want in theirs.items():
            got = ours[key]
            if want.dtype.kind in "SO":
                got = np.asarray([s.encode() for s in got] if isinstance(got, list) else got.encode())
                assert got.tolist() == want.tolist(), key
            else:
                assert got.dtype == want.dtype and got.shape == want.shape, (key, got.dtype, want.dtype)
                np.testing.assert_array_equal(got, want, err_msg=f"episode {e} {key}")
            compared += want.size
    return compared


@pytest.fixture(scope="module")
def tfds_built(tmp_path_factory):
    out = tmp_path_factory.mktemp("tfds_built")
    run_tfds("build", "--out", str(out), "--episodes", "3", "--image-size", "256")
    return out


@pytest.mark.parametrize("dataset", ["libero_like_no_noops/1.0.0", "tfds_dtype_mix/0.2.0"])
def test_reader_matches_tfds_on_datasets_built_by_tfds(tfds_built, dataset, tmp_path):
    run_tfds("dump", "--data-dir", str(tfds_built / dataset), "--out", str(tmp_path / "tfds.npz"))
    assert assert_same_as_tfds(tfds_built / dataset, tmp_path / "tfds.npz") > 0


def test_tfds_reads_our_writer_like_our_reader(episodes, tmp_path):
    data_dir = write_rlds_dataset(tmp_path / "rlds", "libero_written_no_noops", episodes, num_shards=2)
    run_tfds("dump", "--data-dir", str(data_dir), "--out", str(tmp_path / "tfds.npz"))
    assert_same_as_tfds(data_dir, tmp_path / "tfds.npz")
    decoded = np.load(tmp_path / "tfds.npz")
    np.testing.assert_array_equal(decoded["e1/steps/action"], episodes[1]["steps"]["action"])
