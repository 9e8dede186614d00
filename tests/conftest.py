import os
import pathlib

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
# Several processes of one test run (the suite, its CLI subprocesses) may load libtpu to compile
# for TPU topologies; libtpu otherwise lets only one hold it.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")


def _shared_data_dir():
  return pathlib.Path(os.environ.get("ACULA_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data():
  """The real recordings of ../shared/data, or a skip that says where they were looked for."""
  path = _shared_data_dir()
  if not path.is_dir():
    pytest.skip(f"real data not found at {path} (set ACULA_SHARED_DATA)")
  return path


def pytest_collection_modifyitems(config, items):
  del config
  import jax  # pylint: disable=g-import-not-at-top
  if jax.default_backend() == "cpu":
    return
  skip = pytest.mark.skip(reason=f"asserts an XLA:CPU property; the backend is {jax.default_backend()}")
  for item in items:
    if "cpu_only" in item.keywords:
      item.add_marker(skip)


TINY_TEXT_DIM = 24


@pytest.fixture(name="corpus")
def corpus_fixture(tiny_corpus):
  """The tiny corpus under the name the training tests use (with `tiny_training.tiny_config`)."""
  return tiny_corpus


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
  """80 synthetic 2 s clips as records, and random teacher embeddings for their training split."""
  from acula_jax.data import records, synthetic  # pylint: disable=g-import-not-at-top
  import teacher_table  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("corpus")
  examples = [synthetic.generate_example(i, seed=0, duration_s=2.0) for i in range(80)]
  records.write_audio_records(root / "records", examples, dataset="synthetic")
  rng = np.random.default_rng(0)
  train_ids = [e["id"] for e in examples if e["split"] == "train"]
  rows = [(i, rng.normal(size=TINY_TEXT_DIM).astype(np.float32), f"report {i}") for i in train_ids]
  teacher_table.write_teacher_shards(root / "teacher", rows, num_shards=2, metadata={"model": "random"})
  return root
