"""Tests of acula_jax.data.teacher: shards against the `tfrecord` package, lookups by id, damage detection."""
import concurrent.futures
import os
import pickle

from absl import flags
import numpy as np
import pytest
from tfrecord import reader as tfr_reader
from tfrecord import writer as tfr_writer

from acula_jax import fileio
from acula_jax.data import teacher
from acula_jax.errors import CorruptRecordError, DataError, MissingTeacherError
import teacher_table


def _rows(n, d=6, id_format="id{:02d}"):
  emb = np.random.default_rng(1).normal(size=(n, d)).astype(np.float32)
  return [(id_format.format(i), emb[i], f"report {i}, ünïcode") for i in reversed(range(n))]


def _write(directory, rows, num_shards=1):
  return teacher_table.write_teacher_shards(directory, rows, num_shards, metadata={"model": "m"})


def test_shard_bounds():
  assert teacher.shard_bounds(10, 4) == [(0, 2), (2, 5), (5, 8), (8, 10)]
  assert teacher.shard_bounds(2, 4) == [(0, 1), (1, 2)]
  assert teacher.shard_bounds(0, 4) == [(0, 0)]


def test_lookup_round_trip(tmp_path):
  rows = _rows(10)
  manifest = _write(tmp_path, rows, num_shards=3)
  assert [s["count"] for s in manifest["shards"]] == [3, 4, 3]
  table = teacher.TeacherTable(tmp_path)
  assert len(table) == 10 and table.dim == 6 and table.manifest == manifest
  for example_id, embedding, _ in rows:
    found = table.lookup(example_id)
    assert found.dtype == np.float32
    np.testing.assert_array_equal(found, embedding)
  assert [row["id"] for row in table.rows()] == [f"id{i:02d}" for i in range(10)]
  assert next(table.rows())["report"] == "report 0, ünïcode"
  assert table.missing(["id03", "nope", "id09", "id10"]) == ["nope", "id10"]
  with pytest.raises(MissingTeacherError, match="nope: no teacher embedding"):
    table.lookup("nope")


def test_shards_read_by_tfrecord_package(tmp_path):
  """Our shards parse with an independent reader (TensorFlow is not installed here)."""
  manifest = _write(tmp_path, _rows(3))
  path = str(tmp_path / manifest["shards"][0]["file"])
  parsed = list(tfr_reader.tfrecord_loader(path, None, {"id": "byte", "embedding": "float", "report": "byte"}))
  assert [bytes(p["id"]).decode() for p in parsed] == ["id00", "id01", "id02"]
  np.testing.assert_array_equal(np.stack([p["embedding"] for p in parsed]),
                                np.stack([r[1] for r in reversed(_rows(3))]))
  assert teacher.masked_crc32c(b"hello") == int.from_bytes(tfr_writer.TFRecordWriter.masked_crc(b"hello"), "little")


def test_reads_shards_written_by_tfrecord_package(tmp_path):
  name = teacher.shard_name(0, 1)
  writer = tfr_writer.TFRecordWriter(str(tmp_path / name))
  for i in range(4):
    writer.write({"id": (f"r{i}".encode(), "byte"), "embedding": ([0.5 * i, -1.0], "float"),
                  "report": (b"text", "byte")})
  writer.close()
  shard = {"file": name, "count": 4, "bytes": os.path.getsize(tmp_path / name)}
  index = teacher.write_index(tmp_path, [shard])
  fileio.write_json_atomic(tmp_path / "manifest.json", {"dim": 2, "count": 4, "shards": [shard], "index": index})
  np.testing.assert_array_equal(teacher.TeacherTable(tmp_path).lookup("r3"), [1.5, -1.0])


def _flip(path, offset):
  data = bytearray(path.read_bytes())
  data[offset] ^= 0x04
  path.write_bytes(bytes(data))


@pytest.mark.parametrize("offset,what", [(3, "length CRC"), (40, "data CRC")])
def test_damaged_record_fails_its_lookup(tmp_path, offset, what):
  manifest = _write(tmp_path, _rows(4), num_shards=2)
  path = tmp_path / manifest["shards"][0]["file"]
  _flip(path, offset)  # same size: only the record's CRCs can tell
  table = teacher.TeacherTable(tmp_path)
  with pytest.raises(CorruptRecordError, match=what) as e:
    table.lookup("id00")
  assert str(path) in str(e.value) and "byte 0" in str(e.value)
  np.testing.assert_array_equal(table.lookup("id03"), _rows(4)[0][1])  # the other shard is intact


def test_swapped_records_are_caught_by_id(tmp_path):
  manifest = _write(tmp_path, _rows(2), num_shards=2)
  a, b = (tmp_path / s["file"] for s in manifest["shards"])
  first, second = a.read_bytes(), b.read_bytes()
  a.write_bytes(second)
  b.write_bytes(first)
  with pytest.raises(CorruptRecordError, match="holds 'id01' where the index says 'id00'"):
    teacher.TeacherTable(tmp_path).lookup("id00")


def test_open_checks_files_against_the_manifest(tmp_path):
  manifest = _write(tmp_path, _rows(4), num_shards=2)
  shard = tmp_path / manifest["shards"][1]["file"]
  shard.write_bytes(shard.read_bytes()[:-3])
  with pytest.raises(CorruptRecordError, match="bytes, manifest.json says") as e:
    teacher.TeacherTable(tmp_path)
  assert str(shard) in str(e.value)
  os.remove(shard)
  with pytest.raises(CorruptRecordError, match="missing"):
    teacher.TeacherTable(tmp_path)

  manifest = _write(tmp_path / "b", _rows(4))
  index = tmp_path / "b" / teacher.INDEX
  _flip(index, os.path.getsize(index) - 1)
  with pytest.raises(CorruptRecordError, match="sha256 differs"):
    teacher.TeacherTable(tmp_path / "b")
  del manifest["index"]
  fileio.write_json_atomic(tmp_path / "b" / "manifest.json", manifest)
  with pytest.raises(CorruptRecordError, match="rerun acula_jax.text.precompute"):
    teacher.TeacherTable(tmp_path / "b")


def test_duplicates_counts_and_hash_collisions(tmp_path, monkeypatch):
  shards = [teacher.write_shard(tmp_path, [("a", np.ones(2), "r")], i, 2) for i in range(2)]
  with pytest.raises(DataError, match="duplicate id 'a'"):
    teacher.write_index(tmp_path, shards)
  with pytest.raises(CorruptRecordError, match="holds 1 records, manifest says 3"):
    teacher.write_index(tmp_path, [{**shards[0], "count": 3}])
  monkeypatch.setattr(teacher, "id_keys", lambda ids: np.zeros(len(ids), np.uint64))
  with pytest.raises(DataError, match="share a 64-bit hash"):
    _write(tmp_path / "c", _rows(2))


def test_bad_row_writes_nothing(tmp_path):
  rows = _rows(3)
  rows[1] = (rows[1][0], np.array([np.nan] * 6), "x")
  with pytest.raises(DataError, match="id01: embedding must be a finite"):
    teacher.write_shard(tmp_path, rows, 0, 1)
  assert os.listdir(tmp_path) == []


def test_pickles_without_its_data_and_reads_from_threads(tmp_path):
  """What grain sends to a worker process is the folder's name, not the table."""
  small, large = tmp_path / "small", tmp_path / "large"
  _write(small, _rows(10, id_format="example/{:06d}"))
  _write(large, _rows(2000, id_format="example/{:06d}"))
  sizes = [len(pickle.dumps(teacher.TeacherTable(path))) for path in (small, large)]
  assert abs(sizes[0] - sizes[1]) < 200, sizes
  table = pickle.loads(pickle.dumps(teacher.TeacherTable(large)))
  expected = {r[0]: r[1] for r in _rows(2000, id_format="example/{:06d}")}
  ids = list(expected)[::7]
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    found = list(pool.map(table.lookup, ids))
  for example_id, embedding in zip(ids, found):
    np.testing.assert_array_equal(embedding, expected[example_id])


def test_grain_workers_join_the_same_rows(tiny_corpus):
  """The training pipeline with a worker process (the table pickled to it) gives the in-process batches."""
  from acula_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  import tiny_training  # pylint: disable=g-import-not-at-top
  table = teacher.TeacherTable(tiny_corpus / "teacher")
  batches = []
  parsed = flags.FLAGS.is_parsed()
  flags.FLAGS.mark_as_parsed()  # grain's worker processes read its absl flags (their defaults here)
  try:
    for workers in (0, 1):
      config = tiny_training.tiny_config(tiny_corpus, **{"data.num_workers": workers})
      iterator = iter(input_pipeline.create_train_dataset(config, table, num_epochs=1))
      batches.append([next(iterator) for _ in range(2)])
  finally:
    if not parsed:
      flags.FLAGS.unparse_flags()
  for ours, theirs in zip(*batches):
    np.testing.assert_array_equal(ours["text_embedding"], theirs["text_embedding"])
    np.testing.assert_array_equal(ours["audio"], theirs["audio"])
  rows = {tuple(row["embedding"]) for row in table.rows()}
  assert all(tuple(e) in rows for e in batches[1][0]["text_embedding"])
