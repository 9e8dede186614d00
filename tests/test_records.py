"""Tests of acula_jax.data.records: framing against the `tfrecord` package, round-trips, and damage detection."""

import json
import os
import pickle

import numpy as np
import pytest
from tfrecord import reader as tfr_reader
from tfrecord import writer as tfr_writer

from acula_jax import fileio
from acula_jax.data import records
from acula_jax.errors import CorruptRecordError, DataError
import teacher_table


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
# TFRecord framing.
# ---------------------------------------------------------------------------------------------------

def test_tfrecord_round_trip_and_atomic(tmp_path):
  payloads = [b"", b"a", os.urandom(5000), b"xyz" * 7]
  path = tmp_path / "x.tfrecord"
  assert records.write_tfrecord(path, payloads) == 4
  assert list(records.iter_tfrecord(path)) == payloads
  assert os.listdir(tmp_path) == ["x.tfrecord"]  # No temporary file left behind.


def test_tfrecord_files_read_by_tfrecord_package(tmp_path):
  """Our files parse with an independent reader (tensorflow is not installed here)."""
  path = str(tmp_path / "ours.tfrecord")
  embs = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
  records.write_tfrecord(path, [records.encode_teacher_example(f"id{i}", e, f"report {i}")
                                for i, e in enumerate(embs)])
  raw = [bytes(b) for b in tfr_reader.tfrecord_iterator(path)]
  assert raw == list(records.iter_tfrecord(path))
  parsed = list(tfr_reader.tfrecord_loader(path, None, {"id": "byte", "embedding": "float", "report": "byte"}))
  assert [bytes(p["id"]).decode() for p in parsed] == ["id0", "id1", "id2"]
  np.testing.assert_array_equal(np.stack([p["embedding"] for p in parsed]), embs)
  # And the CRCs are the ones the package's writer computes.
  assert records.masked_crc32c(b"hello") == int.from_bytes(tfr_writer.TFRecordWriter.masked_crc(b"hello"), "little")


def test_reads_files_written_by_tfrecord_package(tmp_path):
  path = str(tmp_path / "theirs.tfrecord")
  writer = tfr_writer.TFRecordWriter(path)
  for i in range(4):
    writer.write({"id": (f"r{i}".encode(), "byte"), "embedding": ([0.5 * i, -1.0], "float"),
                  "report": (b"text", "byte")})
  writer.close()
  rows = [records.decode_teacher_example(b) for b in records.iter_tfrecord(path, verify_crc=True)]
  assert [r["id"] for r in rows] == ["r0", "r1", "r2", "r3"]
  np.testing.assert_array_equal(rows[3]["embedding"], [1.5, -1.0])


@pytest.mark.parametrize("offset,what", [(3, "length CRC"), (12 + 5, "data CRC")])
def test_tfrecord_crc_mismatch(tmp_path, offset, what):
  path = tmp_path / "x.tfrecord"
  records.write_tfrecord(path, [b"0123456789" * 3, b"second"])
  data = bytearray(path.read_bytes())
  data[offset] ^= 0x01
  path.write_bytes(bytes(data))
  with pytest.raises(CorruptRecordError, match=what) as e:
    list(records.iter_tfrecord(path))
  assert str(path) in str(e.value) and "record 0" in str(e.value)


def test_tfrecord_payload_damage_passes_without_verify(tmp_path):
  path = tmp_path / "x.tfrecord"
  records.write_tfrecord(path, [b"abcdef"])
  data = bytearray(path.read_bytes())
  data[13] ^= 0x01
  path.write_bytes(bytes(data))
  assert list(records.iter_tfrecord(path, verify_crc=False)) == [b"accdef"]


@pytest.mark.parametrize("cut", [5, 12, 20, 48, -3])  # In a header, payload, footer; the last record.
def test_tfrecord_truncated(tmp_path, cut):
  path = tmp_path / "x.tfrecord"
  records.write_tfrecord(path, [b"x" * 30, b"y" * 40])
  path.write_bytes(path.read_bytes()[:cut])
  with pytest.raises(CorruptRecordError, match="truncated") as e:
    list(records.iter_tfrecord(path))
  assert str(path) in str(e.value)


def test_interrupted_tfrecord_write_leaves_nothing(tmp_path):
  def payloads():
    yield b"one"
    raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    records.write_tfrecord(tmp_path / "x.tfrecord", payloads())
  assert os.listdir(tmp_path) == []


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
  example = records.example_pb2.Example()
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


# ---------------------------------------------------------------------------------------------------
# Teacher shards.
# ---------------------------------------------------------------------------------------------------

def _teacher_rows(n, d=6):
  emb = np.random.default_rng(1).normal(size=(n, d)).astype(np.float32)
  return [(f"id{i:02d}", emb[i], f"report {i}, ünïcode") for i in reversed(range(n))]


def test_teacher_round_trip(tmp_path):
  rows = _teacher_rows(10)
  manifest = teacher_table.write_teacher_shards(tmp_path, rows, 3, metadata={"model": "m"})
  assert [s["count"] for s in manifest["shards"]] == [3, 4, 3]
  assert manifest["dim"] == 6 and manifest["count"] == 10 and manifest["model"] == "m"
  ids, emb, loaded = records.load_teacher_embeddings(tmp_path)
  assert ids == [f"id{i:02d}" for i in range(10)] and loaded == manifest
  expected = dict((r[0], r[1]) for r in rows)
  np.testing.assert_array_equal(emb, np.stack([expected[i] for i in ids]))
  assert emb.dtype == np.float32
  first = next(records.iter_tfrecord(tmp_path / manifest["shards"][0]["file"]))
  assert records.decode_teacher_example(first)["report"] == "report 0, ünïcode"


def test_teacher_sha256_mismatch(tmp_path):
  manifest = teacher_table.write_teacher_shards(tmp_path, _teacher_rows(4), 2)
  # A valid TFRecord with other contents: only the sha256 can tell.
  path = tmp_path / manifest["shards"][1]["file"]
  records.write_tfrecord(path, [records.encode_teacher_example("id02", np.ones(6), "x"),
                                records.encode_teacher_example("id03", np.ones(6), "y")])
  with pytest.raises(CorruptRecordError, match="sha256") as e:
    records.load_teacher_embeddings(tmp_path)
  assert str(path) in str(e.value)


def test_teacher_crc_and_missing_shard(tmp_path):
  manifest = teacher_table.write_teacher_shards(tmp_path, _teacher_rows(4), 2)
  path = tmp_path / manifest["shards"][0]["file"]
  data = bytearray(path.read_bytes())
  data[20] ^= 0x04
  path.write_bytes(bytes(data))
  manifest["shards"][0]["sha256"] = fileio.sha256_file(path)  # Bypass the sha: the CRC must catch it.
  fileio.write_json_atomic(tmp_path / "manifest.json", manifest)
  with pytest.raises(CorruptRecordError, match="CRC"):
    records.load_teacher_embeddings(tmp_path)
  os.remove(path)
  with pytest.raises(CorruptRecordError, match="missing") as e:
    records.load_teacher_embeddings(tmp_path)
  assert str(path) in str(e.value)


def test_teacher_duplicates_and_counts(tmp_path):
  with pytest.raises(DataError, match="duplicate id 'a'"):
    teacher_table.write_teacher_shards(tmp_path, [("a", np.ones(2), ""), ("a", np.ones(2), "")], 1)
  shards = [records.write_teacher_shard(tmp_path, [("a", np.ones(2), "r")], i, 2) for i in range(2)]
  fileio.write_json_atomic(tmp_path / "manifest.json", {"dim": 2, "count": 2, "shards": shards})
  with pytest.raises(DataError, match="teacher-00001-of-00002.tfrecord: duplicate id 'a'"):
    records.load_teacher_embeddings(tmp_path)
  fileio.write_json_atomic(tmp_path / "manifest.json", {"dim": 2, "count": 3, "shards": shards[:1]})
  with pytest.raises(CorruptRecordError, match="shards hold 1 embeddings, manifest says 3"):
    records.load_teacher_embeddings(tmp_path)


def test_shard_bounds():
  assert records.shard_bounds(10, 4) == [(0, 2), (2, 5), (5, 8), (8, 10)]
  assert records.shard_bounds(2, 4) == [(0, 1), (1, 2)]
  assert records.shard_bounds(0, 4) == [(0, 0)]
