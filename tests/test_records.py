"""Tests of acula_jax.data.records (audio records): round-trips, damage detection, tf.train.Example compatibility."""

import json
import os
import pickle

import numpy as np
import pytest

from acula_jax.data import records
from acula_jax.data import tf_example
from acula_jax.errors import CorruptRecordError, DataError


def _example(i, split="train", n=None, dataset="demo"):
  rng = np.random.default_rng(i)
  n = n or 800 + 37 * i
  return {
      "id": f"ex{i:03d}", "dataset": dataset, "subject_id": f"s{i // 2}", "split": split,
      "audio": rng.uniform(-1, 1, n).astype(np.float32), "sample_rate": 16000,
      "labels": {"wheeze": int(i % 2), "diagnosis": ["copd", "healthy"][i % 2]},
      "metadata": {"site": "trachea", "gain": np.float32(0.5)},
  }


def _shards(directory):
  return sorted(f for f in os.listdir(directory) if f.endswith(".array_record"))


# ---------------------------------------------------------------------------------------------------
# Audio examples and datasets.
# ---------------------------------------------------------------------------------------------------

def test_audio_example_round_trip():
  ex = _example(3)
  out = records.decode_audio_example(records.encode_audio_example(ex))
  np.testing.assert_array_equal(out["audio"], ex["audio"])
  assert out["audio"].dtype == np.float32 and out["audio"].flags.writeable
  assert out["num_samples"] == len(ex["audio"])
  assert out["labels"] == ex["labels"] and out["metadata"] == {"site": "trachea", "gain": 0.5}
  for key in ("id", "dataset", "subject_id", "split", "sample_rate"):
    assert out[key] == ex[key]


def test_audio_num_samples_mismatch_names_id():
  data = records.encode_audio_example(_example(1))
  example = tf_example.Example()
  example.ParseFromString(data)
  example.features.feature["num_samples"].int64_list.value[0] += 1
  with pytest.raises(CorruptRecordError, match="ex001: audio holds"):
    records.decode_audio_example(example.SerializeToString())
  with pytest.raises(CorruptRecordError, match="not a tf.train.Example"):
    records.decode_audio_example(b"\xff\xff garbage", where="file.ar")


@pytest.mark.parametrize("change,match", [
    ({"audio": np.array([0.1, np.nan], np.float32)}, "NaN"),
    ({"audio": np.zeros(10, np.float64)}, "float32"),
    ({"audio": np.zeros((2, 10), np.float32)}, "1-D"),
    ({"audio": np.zeros(0, np.float32)}, "1-D"),
    ({"sample_rate": None}, "sample_rate"),
    ({"split": "train-a"}, "split"),
    ({"num_samples": 3}, "num_samples"),
    ({"labels": {"x": object()}}, "JSON"),
])
def test_invalid_examples_name_the_id(tmp_path, change, match):
  bad = {**_example(5), **change}
  with pytest.raises(DataError, match=f"ex005: .*{match}"):
    records.write_audio_records(tmp_path, [_example(1), bad], dataset="demo")
  assert os.listdir(tmp_path) == []


def test_write_and_read_audio_dataset(tmp_path):
  skipped = []

  def examples():  # A generator, as ingestion produces them; it notes skipped files on the way.
    for i in range(9):
      skipped.append({"path": f"/raw/{i}.wav", "reason": "silent"}) if i == 4 else None
      yield _example(i, split="train" if i < 7 else "test")

  manifest = records.write_audio_records(tmp_path, examples(), dataset="demo", num_shards=3,
                                         skipped=skipped)
  assert manifest["counts"] == {"test": 2, "train": 7} and manifest["num_examples"] == 9
  assert manifest["files"]["train"] == [f"train-0000{i}-of-00003.array_record" for i in range(3)]
  # Fewer examples than shards: only non-empty shards, numbered as such.
  assert manifest["files"]["test"] == [f"test-0000{i}-of-00002.array_record" for i in range(2)]
  assert manifest["label_keys"] == ["diagnosis", "wheeze"] and manifest["sample_rate"] == 16000
  assert manifest["skipped"] == [{"path": "/raw/4.wav", "reason": "silent"}]
  assert records.read_manifest(tmp_path) == manifest
  assert sorted(os.listdir(tmp_path)) == sorted(["manifest.json"] + sum(manifest["files"].values(), []))

  source = records.AudioRecordSource(tmp_path, "train")
  assert len(source) == 7
  got = {source[i]["id"]: source[i] for i in range(len(source))}
  assert sorted(got) == [f"ex{i:03d}" for i in range(7)]
  for i in range(7):
    np.testing.assert_array_equal(got[f"ex{i:03d}"]["audio"], _example(i)["audio"])
  clone = pickle.loads(pickle.dumps(source))  # grain worker processes receive the source pickled.
  assert clone[6]["id"] == source[6]["id"]
  with pytest.raises(IndexError):
    source[7]
  assert records.audio_record_paths(tmp_path, "test")[0].endswith("test-00000-of-00002.array_record")


def test_open_split_reads_several_folders_in_order(tmp_path):
  records.write_audio_records(tmp_path / "a", [_example(i) for i in range(3)], dataset="demo", num_shards=2)
  records.write_audio_records(tmp_path / "b", [_example(i) for i in range(3, 8)], dataset="demo")
  single = records.open_split(tmp_path / "a", "train")
  assert isinstance(single, records.AudioRecordSource) and len(single) == 3
  both = records.open_split(f"{tmp_path / 'a'}, {tmp_path / 'b'},", "train")  # blanks and a trailing comma
  assert len(both) == 8
  ids = [both[i]["id"] for i in range(8)]  # folder a's records, then folder b's (each in its shard order)
  assert sorted(ids[:3]) == [f"ex{i:03d}" for i in range(3)]
  assert sorted(ids[3:]) == [f"ex{i:03d}" for i in range(3, 8)]
  for i, example_id in enumerate(ids):
    np.testing.assert_array_equal(both[i]["audio"], _example(int(example_id[2:]))["audio"])
  assert pickle.loads(pickle.dumps(both))[7]["id"] == ids[7]  # grain workers receive it pickled
  for index in (8, -1):
    with pytest.raises(IndexError):
      both[index]
  with pytest.raises(DataError, match="no ArrayRecord shards for split 'test'"):
    records.open_split([tmp_path / "a", tmp_path / "b"], "test")
  with pytest.raises(ValueError, match="no records folder"):
    records.open_split(" , ", "train")


def test_duplicate_id_rejected(tmp_path):
  with pytest.raises(DataError, match="ex002: duplicate"):
    records.write_audio_records(tmp_path, [_example(2), _example(2, split="test")], dataset="demo")
  assert os.listdir(tmp_path) == []


def test_interrupted_write_keeps_previous_dataset_and_leaves_nothing_new(tmp_path):
  old = tmp_path / "old"
  records.write_audio_records(old, [_example(i) for i in range(3)], dataset="demo")

  def crashing(start):
    for i in range(start, start + 5):
      if i == start + 3:
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of ingestion.
      yield _example(i)

  fresh = tmp_path / "fresh"
  for out in (fresh, old):
    with pytest.raises(KeyboardInterrupt):
      records.write_audio_records(out, crashing(10), dataset="demo", num_shards=2)
  assert os.listdir(fresh) == []  # No manifest, no shards, no temporary directory.
  with pytest.raises(DataError, match="manifest.json: missing"):
    records.AudioRecordSource(fresh, "train")
  assert [records.AudioRecordSource(old, "train")[i]["id"] for i in range(3)] == ["ex000", "ex001", "ex002"]
  # A finished rewrite replaces the old dataset entirely.
  records.write_audio_records(old, [_example(7, split="val")], dataset="demo")
  assert _shards(old) == ["val-00000-of-00001.array_record"]


def test_manifest_missing_or_invalid(tmp_path):
  with pytest.raises(DataError, match="manifest.json: missing"):
    records.read_manifest(tmp_path)
  (tmp_path / "manifest.json").write_text("{not json")
  with pytest.raises(CorruptRecordError, match="manifest.json: not valid JSON"):
    records.read_manifest(tmp_path)
  with pytest.raises(DataError, match="does not exist"):
    records.read_manifest(tmp_path / "nope")


def test_missing_split_and_missing_shard(tmp_path):
  records.write_audio_records(tmp_path, [_example(i) for i in range(4)], dataset="demo", num_shards=2)
  with pytest.raises(DataError, match=f"{tmp_path}: no ArrayRecord shards for split 'val'"):
    records.audio_record_paths(tmp_path, "val")
  os.remove(tmp_path / "train-00001-of-00002.array_record")
  with pytest.raises(CorruptRecordError, match="incomplete"):
    records.AudioRecordSource(tmp_path, "train")


def test_truncated_array_record_names_file(tmp_path):
  records.write_audio_records(tmp_path, [_example(i, n=20000) for i in range(6)], dataset="demo", num_shards=2)
  path = tmp_path / "train-00001-of-00002.array_record"
  data = path.read_bytes()
  # array_record reads its footer (the record index) first, so any truncation fails when opening.
  for cut in (len(data) // 2, len(data) - 1):
    path.write_bytes(data[:cut])
    with pytest.raises(CorruptRecordError, match="unreadable ArrayRecord") as e:
      records.AudioRecordSource(tmp_path, "train")
    assert str(path) in str(e.value)


def test_damaged_array_record_chunk_names_file(tmp_path):
  records.write_audio_records(tmp_path, [_example(0, n=8000)], dataset="demo")
  path = tmp_path / "train-00000-of-00001.array_record"
  data = bytearray(path.read_bytes())
  data[16000] ^= 0xFF  # Inside the record's audio bytes; riegeli's chunk hash catches it on read.
  path.write_bytes(bytes(data))
  source = records.AudioRecordSource(tmp_path, "train")
  with pytest.raises(CorruptRecordError, match="cannot read record 0") as e:
    source[0]
  assert str(path) in str(e.value)


def test_manifest_count_mismatch(tmp_path):
  records.write_audio_records(tmp_path, [_example(i) for i in range(3)], dataset="demo")
  manifest = json.loads((tmp_path / "manifest.json").read_text())
  manifest["counts"]["train"] = 4
  (tmp_path / "manifest.json").write_text(json.dumps(manifest))
  with pytest.raises(CorruptRecordError, match="holds 3 records, manifest says 4"):
    records.AudioRecordSource(tmp_path, "train")




def test_tf_example_is_wire_compatible_with_tensorflows():
  """Our tf.train.Example against the `tfrecord` package's generated copy of TensorFlow's protos."""
  from tfrecord import example_pb2  # pylint: disable=g-import-not-at-top  (imports torch)

  def example(m):
    return m.Example(features=m.Features(feature={
        "b": m.Feature(bytes_list=m.BytesList(value=[b"", b"\x00\xffx"])),
        "f": m.Feature(float_list=m.FloatList(value=[1.5, -2.0, 3.25e-7])),
        "i": m.Feature(int64_list=m.Int64List(value=[0, -5, 1 << 40])),
        "empty": m.Feature()}))

  ours, theirs = example(tf_example), example(example_pb2)
  assert ours.SerializeToString(deterministic=True) == theirs.SerializeToString(deterministic=True)
  assert tf_example.Example.FromString(theirs.SerializeToString()) == ours
  assert example_pb2.Example.FromString(ours.SerializeToString()) == theirs
  audio = records.encode_audio_example(_example(2))
  assert example_pb2.Example.FromString(audio).features.feature["id"].bytes_list.value == [b"ex002"]
