"""acula_jax.data.tfds_builders: TFDS builders (optional extra) and that training never imports TF/TFDS.

The TFDS tests run only where `pip install acula_jax[tfds]` was done; TensorFlow is not needed and
these tests check that it is not imported. The import checks run everywhere.
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from acula_jax import audio
from acula_jax.audio import io as audio_io
from acula_jax.data import prepare
from acula_jax.data import records
from acula_jax.data.datasets import yaseen2018

LIMIT = 24  # Yaseen recordings in the real-data subset (evenly spaced over the sorted ids).


def _run_python(code: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                        timeout=600, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ----------------------------------------------------------------------------------------------------
# Without TFDS.
# ----------------------------------------------------------------------------------------------------

def test_training_imports_neither_tensorflow_nor_tfds():
  result = _run_python("""
      import sys
      import acula_jax, acula_jax.train, acula_jax.main, acula_jax.input_pipeline, acula_jax.data.prepare
      heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorflow_datasets"))
      print("HEAVY", heavy)
      """)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "HEAVY []" in result.stdout, result.stdout


def test_missing_tfds_gives_an_import_error_naming_the_extra():
  # sys.modules[name] = None makes that import fail, whether or not the package is installed.
  result = _run_python("""
      import sys
      sys.modules["tensorflow_datasets"] = None
      try:
        import acula_jax.data.tfds_builders
      except ImportError as e:
        print("ERROR", e)
      """)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "ERROR" in result.stdout and "pip install 'acula_jax[tfds]'" in result.stdout, result.stdout


# ----------------------------------------------------------------------------------------------------
# With TFDS (optional extra).
# ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tfds():
  return pytest.importorskip("tensorflow_datasets")


@pytest.fixture(scope="module")
def builders(tfds):  # pylint: disable=redefined-outer-name,unused-argument
  from acula_jax.data import tfds_builders  # pylint: disable=g-import-not-at-top
  return tfds_builders


@pytest.fixture(scope="module")
def yaseen_built(builders, shared_data, tmp_path_factory):  # pylint: disable=redefined-outer-name
  """The Yaseen builder run on LIMIT real recordings into a temporary TFDS data_dir."""
  data_dir = tmp_path_factory.mktemp("tfds")
  manual_dir = shared_data / "yaseen2018"
  builder = builders.build("yaseen2018", manual_dir, data_dir, options={"limit": str(LIMIT)})
  return builder, data_dir, manual_dir


def test_builders_are_registered_with_manual_instructions(builders, tfds):  # pylint: disable=redefined-outer-name
  for name, cls in [("physionet2016", builders.Physionet2016), ("yaseen2018", builders.Yaseen2018),
                    ("hls_cmds", builders.HlsCmds)]:
    assert tfds.builder_cls(name) is cls
    assert cls.MANUAL_DOWNLOAD_INSTRUCTIONS.strip()
    assert "default" in cls.builder_configs
  assert "leave_database_out-e" in builders.Physionet2016.builder_configs
  assert builders.builder_class("yaseen2018") is builders.Yaseen2018  # made once
  icbhi = builders.builder_class("icbhi")  # generic factory: instructions from the adapter's docs
  assert tfds.builder_cls("icbhi") is icbhi and "icbhi" in icbhi.MANUAL_DOWNLOAD_INSTRUCTIONS
  assert builders.config_name({"split": "leave_database_out:e", "limit": 40}) == (
      "limit-40.split-leave_database_out-e")
  assert builders.Physionet2016.config_for(split="leave_database_out:e") is (
      builders.Physionet2016.builder_configs["leave_database_out-e"])


def test_yaseen_builds_array_record_readable_by_tfds_and_grain(yaseen_built, tfds):  # pylint: disable=redefined-outer-name
  import grain  # pylint: disable=g-import-not-at-top
  builder, data_dir, manual_dir = yaseen_built
  assert "tensorflow" not in sys.modules  # built without TensorFlow
  specs, skipped = yaseen2018.list_examples(manual_dir, limit=LIMIT)
  assert not skipped
  expected = {spec.id: spec for spec in specs}
  assert builder.info.file_format.value == "array_record"
  files = sorted(os.listdir(builder.data_dir))
  assert any(f.startswith("yaseen2018-train.array_record-") for f in files), files

  sources = tfds.data_source(f"yaseen2018/limit-{LIMIT}", data_dir=os.fspath(data_dir))
  assert set(sources) == {spec.split for spec in specs}
  seen = {}
  for split, source in sources.items():
    via_tfds = [source[i] for i in range(len(source))]
    via_grain = list(grain.MapDataset.source(source))
    assert len(via_tfds) == len(via_grain) == sum(s.split == split for s in specs)
    for a, b in zip(via_tfds, via_grain):
      assert a["id"] == b["id"] and np.array_equal(a["audio"], b["audio"])
    for ex in via_tfds:
      ex_id = ex["id"].decode()
      spec = expected[ex_id]
      wave = audio_io.load_audio(manual_dir / spec.path)
      assert ex["audio"].dtype == np.float32 and np.array_equal(ex["audio"], wave), ex_id
      assert ex["num_samples"] == wave.size and ex["sample_rate"] == audio.SAMPLE_RATE
      assert ex["split"].decode() == split and ex["subject_id"].decode() == spec.subject_id
      assert json.loads(ex["labels"]) == spec.labels
      assert json.loads(ex["metadata"])["source_path"] == spec.path
      seen[ex_id] = split
  assert sorted(seen) == sorted(expected)  # every id once, none lost
  assert "tensorflow" not in sys.modules
  assert builder.info.metadata["counts"] == {s: len(v) for s, v in sources.items()}
  assert builder.info.metadata["skipped"] == []


def test_records_equal_those_of_prepare(yaseen_built, builders, tmp_path, tfds):  # pylint: disable=redefined-outer-name
  import grain  # pylint: disable=g-import-not-at-top
  _, data_dir, manual_dir = yaseen_built
  prepare.prepare("yaseen2018", manual_dir, tmp_path / "records", options={"limit": str(LIMIT)},
                  progress=False)
  for split, source in tfds.data_source(f"yaseen2018/limit-{LIMIT}", data_dir=os.fspath(data_dir)).items():
    ours = list(grain.MapDataset.source(source).map(builders.to_record))
    assert [ex["id"] for ex in ours] == sorted(ex["id"] for ex in ours)  # the adapter's order
    theirs = records.AudioRecordSource(tmp_path / "records", split)
    theirs = {ex["id"]: ex for ex in (theirs[i] for i in range(len(theirs)))}
    assert len(ours) == len(theirs)
    for a in ours:
      b = dict(theirs[a["id"]])
      assert np.array_equal(a.pop("audio"), b.pop("audio")), a["id"]
      assert a == b


def test_undecodable_files_are_skipped_logged_and_listed(builders, tmp_path, caplog):  # pylint: disable=redefined-outer-name
  import soundfile  # pylint: disable=g-import-not-at-top
  manual = tmp_path / "manual"
  rng = np.random.default_rng(0)
  for folder in ("N", "MR"):
    (manual / folder).mkdir(parents=True)
    for i in range(4):
      soundfile.write(manual / folder / f"{folder}_{i}.wav", 0.1 * rng.standard_normal(8000), 8000)
  (manual / "MR" / "MR_9.wav").write_bytes(b"not a wav file")    # fails to decode
  soundfile.write(manual / "N" / "N_9.wav", np.zeros(8000), 8000)  # silent
  (manual / "N" / "notes.txt").write_text("not audio")           # skipped by the adapter
  caplog.set_level("WARNING")
  builder = builders.build("yaseen2018", manual, tmp_path / "tfds")
  skipped = builder.info.metadata["skipped"]
  assert sorted(e.get("id", os.path.basename(e["path"])) for e in skipped) == ["MR_9", "N_9", "notes.txt"]
  assert sum(builder.info.metadata["counts"].values()) == 8
  assert sum(s.num_examples for s in builder.info.splits.values()) == 8
  assert "MR_9" in caplog.text and "skipped 3" in caplog.text
  # Written beside the records, so a reader sees them too.
  with open(os.path.join(builder.data_dir, "metadata.json")) as f:
    assert len(json.load(f)["skipped"]) == 3
