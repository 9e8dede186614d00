"""Teacher embeddings on disk: TFRecord shards of `tf.train.Example` rows, looked up by example id.

A teacher folder, as `acula_jax.text.precompute` writes it:

* `teacher-{i:05d}-of-{n:05d}.tfrecord`: rows {id, embedding (float_list), report}, sorted by id.
* `teacher-index.npy`: uint64 [3, rows], sorted by the first row: a 64-bit hash of each id, the byte
  offset of its record, and `shard << 32 | record length`.
* `manifest.json`, written last: dim, count, the shards with their sizes and sha256, the index's sha256,
  and what produced the embeddings.

Training never loads the table. `TeacherTable` maps the index (24 bytes a row, paged in as it is
touched) and reads one record per lookup with a positioned read, so a process holds only the rows it
asks for, and host memory stays flat as the table grows. Every read checks the record's two CRCs and
that it holds the id asked for.

The shards are written with the `tfrecord` package's `TFRecordWriter`. Reading is done here: no
maintained package reads TFRecords at random offsets with CRC checks without TensorFlow (Grain's
`TFRecordIterDataset` is sequential and skips the CRCs; `tfrecord`'s reader skips them too, loads
its whole text index for every range it reads, and imports torch).
"""

from collections.abc import Iterator, Sequence
import hashlib
import os
import re
import struct
import threading

import crc32c
import numpy as np

from acula_jax import fileio
from acula_jax.data import records
from acula_jax.errors import CorruptRecordError, DataError, MissingTeacherError

INDEX = "teacher-index.npy"
SHARD_RE = re.compile(r"^teacher-\d{5}-of-\d{5}\.tfrecord$")
_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_HEADER_BYTES = _LENGTH.size + _CRC.size   # length, masked crc32c of the length bytes
_FRAME_BYTES = _HEADER_BYTES + _CRC.size   # ... payload, masked crc32c of the payload
_CRC_MASK_DELTA = 0xA282EAD8


def shard_name(index: int, count: int) -> str:
  return records.shard_name("teacher", index, count, "tfrecord")


def shard_bounds(num_rows: int, num_shards: int) -> list[tuple[int, int]]:
  """Contiguous [start, end) slices of near-equal size; never more shards than rows (min. one)."""
  num_shards = max(1, min(num_shards, num_rows))
  edges = np.linspace(0, num_rows, num_shards + 1).round().astype(int)
  return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def id_keys(ids: Sequence[str]) -> np.ndarray:
  """uint64 [len(ids)]: the first 8 bytes of each id's BLAKE2b, the key the index is sorted by."""
  return np.fromiter((int.from_bytes(hashlib.blake2b(i.encode("utf-8"), digest_size=8).digest(), "little")
                      for i in ids), dtype=np.uint64, count=len(ids))


# ----------------------------------------------------------------------------------------------------
# Records: a TFRecord frame is uint64 length, masked crc32c(length), payload, masked crc32c(payload).
# ----------------------------------------------------------------------------------------------------

def masked_crc32c(data: bytes) -> int:
  """The CRC TFRecord stores: crc32c rotated right by 15 bits plus a constant (see TF's crc32c.h)."""
  crc = crc32c.crc32c(data)
  return (((crc >> 15) | (crc << 17)) + _CRC_MASK_DELTA) & 0xFFFFFFFF


def _payload_length(header: bytes, where) -> int:
  """The payload length a frame header states, after checking its CRC."""
  if len(header) < _HEADER_BYTES:
    raise CorruptRecordError(where, "truncated record header")
  (length,) = _LENGTH.unpack_from(header)
  if masked_crc32c(header[:_LENGTH.size]) != _CRC.unpack_from(header, _LENGTH.size)[0]:
    raise CorruptRecordError(where, "length CRC mismatch")
  return length


def _payload(frame: bytes, where) -> bytes:
  """The payload of one whole frame; CorruptRecordError when it is cut short or a CRC differs."""
  length = _payload_length(frame, where)
  if len(frame) != length + _FRAME_BYTES:
    raise CorruptRecordError(where, f"record of {length} payload bytes, but {len(frame) - _FRAME_BYTES} read")
  payload = frame[_HEADER_BYTES:_HEADER_BYTES + length]
  if masked_crc32c(payload) != _CRC.unpack_from(frame, _HEADER_BYTES + length)[0]:
    raise CorruptRecordError(where, "data CRC mismatch")
  return payload


def _frames(path: str) -> Iterator[tuple[int, bytes]]:
  """(byte offset, frame) of every record of a TFRecord file, in order; CRCs not yet checked."""
  size = os.path.getsize(path)
  with open(path, "rb") as f:
    offset = 0
    while offset < size:
      header = f.read(_HEADER_BYTES)
      length = _payload_length(header, f"{path}[byte {offset}]")
      # Checked before reading, so a damaged length never turns into a huge allocation.
      if offset + length + _FRAME_BYTES > size:
        raise CorruptRecordError(path, f"truncated record at byte {offset}: needs {length} payload bytes")
      yield offset, header + f.read(length + _CRC.size)
      offset += length + _FRAME_BYTES


def _checked_rows(path: str) -> Iterator[tuple[int, int, dict]]:
  """(byte offset, frame length, row) of every record of a shard, in order, each record checked."""
  for offset, frame in _frames(path):
    where = f"{path}[byte {offset}]"
    yield offset, len(frame), _decode_row(_payload(frame, where), where)


def _decode_row(payload: bytes, where) -> dict:
  features = records.parse_example(payload, where)
  example_id = records.feature_str(features, "id", where)
  return {"id": example_id,
          "embedding": np.array(records.feature_value(features, "embedding", "float_list", example_id),
                                dtype=np.float32),
          "report": records.feature_str(features, "report", example_id)}


# ----------------------------------------------------------------------------------------------------
# Writing (the teacher job).
# ----------------------------------------------------------------------------------------------------

def _checked_row(example_id, embedding, report) -> tuple:
  embedding = np.asarray(embedding, dtype=np.float32)
  if not isinstance(example_id, str) or not example_id:
    raise DataError(repr(example_id), "teacher example id must be a non-empty string")
  if embedding.ndim != 1 or not embedding.size or not np.isfinite(embedding).all():
    raise DataError(example_id, f"embedding must be a finite non-empty vector, got shape {embedding.shape}")
  return example_id, embedding, str(report)


def write_shard(out_dir, rows: Sequence[tuple], index: int, num_shards: int) -> dict:
  """Writes one shard of (id, embedding, report) rows, reads it back, renames it into place.

  Returns {file, count, bytes, sha256}, the shard's entry in manifest.json.
  """
  # `tfrecord` imports torch when it is installed; only the teacher job (torch anyway) writes shards.
  import tfrecord  # pylint: disable=g-import-not-at-top
  rows = [_checked_row(*row) for row in rows]
  name = shard_name(index, num_shards)
  with fileio.atomic_path(os.path.join(os.fspath(out_dir), name)) as tmp:
    writer = tfrecord.TFRecordWriter(tmp)
    try:
      for example_id, embedding, report in rows:
        writer.write({"id": (example_id.encode("utf-8"), "byte"), "embedding": (embedding, "float"),
                      "report": (report.encode("utf-8"), "byte")})
    finally:
      writer.close()
    read_back = [row["id"] for _, _, row in _checked_rows(tmp)]
    if read_back != [row[0] for row in rows]:
      raise CorruptRecordError(tmp, f"wrote {len(rows)} rows, read back {len(read_back)} that differ")
    return {"file": name, "count": len(rows), "bytes": os.path.getsize(tmp), "sha256": fileio.sha256_file(tmp)}


def write_index(directory, shards: Sequence[dict]) -> dict:
  """Reads every listed shard (checking each record) and writes the id index; returns its manifest entry.

  A duplicate id, across shards or within one, is a DataError naming both places.
  """
  directory = os.fspath(directory)
  ids, offsets, shard_lengths = [], [], []
  for number, shard in enumerate(shards):
    path = os.path.join(directory, shard["file"])
    count = 0
    for offset, length, row in _checked_rows(path):
      ids.append(row["id"])
      offsets.append(offset)
      shard_lengths.append(number << 32 | length)
      count += 1
    if count != shard["count"]:
      raise CorruptRecordError(path, f"holds {count} records, manifest says {shard['count']}")
  keys = id_keys(ids)
  order = np.argsort(keys, kind="stable")
  index = np.stack([keys, np.asarray(offsets, np.uint64), np.asarray(shard_lengths, np.uint64)])[:, order]
  same = np.flatnonzero(index[0, 1:] == index[0, :-1])
  if same.size:
    a, b = ids[order[same[0]]], ids[order[same[0] + 1]]
    raise DataError(directory, f"duplicate id {a!r}" if a == b else
                    f"ids {a!r} and {b!r} share a 64-bit hash; rename one of them")
  path = os.path.join(directory, INDEX)
  with fileio.atomic_output(path, "wb") as f:
    np.save(f, index, allow_pickle=False)
  return {"file": INDEX, "count": len(ids), "sha256": fileio.sha256_file(path)}


# ----------------------------------------------------------------------------------------------------
# Reading.
# ----------------------------------------------------------------------------------------------------

class TeacherTable:
  """A teacher folder, looked up by example id without loading it (a grain-picklable lookup).

  Opening checks the manifest, each shard's size and the index's sha256; each lookup reads and checks
  one record. Files are opened lazily in each process that looks up (grain workers included).
  """

  def __init__(self, directory):
    self.source = os.fspath(directory)
    self.manifest = records.read_manifest(self.source)
    manifest_path = os.path.join(self.source, records.MANIFEST)
    shards, index = self.manifest.get("shards"), self.manifest.get("index")
    if not isinstance(shards, list) or not shards or not isinstance(index, dict):
      raise CorruptRecordError(manifest_path, "lists no teacher shards or no index (written by another "
                                              "version?): rerun acula_jax.text.precompute")
    self._paths = [os.path.join(self.source, shard["file"]) for shard in shards]
    for path, shard in zip(self._paths, shards):
      if not os.path.exists(path):
        raise CorruptRecordError(path, "shard listed in manifest.json is missing")
      if os.path.getsize(path) != shard["bytes"]:
        raise CorruptRecordError(path, f"{os.path.getsize(path)} bytes, manifest.json says {shard['bytes']} "
                                       "(file changed or damaged)")
    self._index_path = os.path.join(self.source, index["file"])
    if not os.path.exists(self._index_path) or fileio.sha256_file(self._index_path) != index["sha256"]:
      raise CorruptRecordError(self._index_path, "missing, or its sha256 differs from manifest.json")
    self.dim = int(self.manifest["dim"])
    self._lock = threading.Lock()
    self._index, self._fds = None, {}
    if self._entries().shape != (3, self.manifest["count"]):
      raise CorruptRecordError(self._index_path, f"shape {self._entries().shape}, manifest count "
                                                 f"{self.manifest['count']}")

  def __len__(self) -> int:
    return int(self.manifest["count"])

  def __getstate__(self):
    state = dict(self.__dict__)
    state.update(_lock=None, _index=None, _fds={})  # reopened by whichever process unpickles it
    return state

  def __setstate__(self, state):
    self.__dict__.update(state, _lock=threading.Lock())

  def __del__(self):
    for fd in getattr(self, "_fds", {}).values():
      os.close(fd)

  def _entries(self) -> np.ndarray:
    if self._index is None:
      self._index = np.load(self._index_path, mmap_mode="r", allow_pickle=False)
    return self._index

  def _fd(self, shard: int) -> int:
    if shard not in self._fds:
      with self._lock:
        if shard not in self._fds:
          self._fds[shard] = os.open(self._paths[shard], os.O_RDONLY)
    return self._fds[shard]

  def _rows(self, ids: Sequence[str]) -> np.ndarray:
    """int64 [len(ids)]: each id's column in the index, or -1."""
    keys, wanted = self._entries()[0], id_keys(ids)
    at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return np.where(keys[at] == wanted, at, -1)

  def missing(self, ids: Sequence[str]) -> list[str]:
    """The ids that have no embedding in the table, in the order given."""
    return [example_id for example_id, row in zip(ids, self._rows(ids)) if row < 0]

  def lookup(self, example_id: str) -> np.ndarray:
    """float32 [dim]: the embedding of one example's report."""
    (row,) = self._rows([example_id])
    if row < 0:
      raise MissingTeacherError(example_id, f"no teacher embedding in {self.source} "
                                            "(was its report missing or empty?)")
    _, offset, shard_length = (int(v) for v in self._entries()[:, row])
    shard, length = shard_length >> 32, shard_length & 0xFFFFFFFF
    where = f"{self._paths[shard]}[byte {offset}]"
    found = _decode_row(_payload(os.pread(self._fd(shard), length, offset), where), where)
    if found["id"] != example_id:
      raise CorruptRecordError(where, f"holds {found['id']!r} where the index says {example_id!r}")
    if found["embedding"].shape != (self.dim,) or not np.isfinite(found["embedding"]).all():
      raise CorruptRecordError(where, f"embedding of {example_id!r} has shape {found['embedding'].shape} "
                                      f"(manifest dim {self.dim}) or non-finite values")
    return found["embedding"]

  def rows(self) -> Iterator[dict]:
    """Every row {id, embedding, report}, shard after shard, each record checked."""
    for path in self._paths:
      for _, _, row in _checked_rows(path):
        yield row
