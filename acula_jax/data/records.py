"""Audio records, without TensorFlow: serialised `tf.train.Example` protos (`data.tf_example`) in
ArrayRecord shards (random access for grain), one set per split, next to a `manifest.json` that is
written last and acts as the commit marker of the dataset. The `tf.train.Example` helpers here also
serve the teacher shards (`data.teacher`).

Every failure that concerns a file or an example raises a `DataError` subclass naming it.
"""

from collections.abc import Iterable, Sequence
import datetime
import glob
import hashlib
import json
import os
import re
import shutil
import tempfile

from array_record.python import array_record_module
import grain
import numpy as np

from acula_jax import fileio
from acula_jax.data import tf_example
from acula_jax.errors import CorruptRecordError, DataError


MANIFEST = "manifest.json"
_SHARD_RE = re.compile(r"^(?P<prefix>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.array_record$")
# Split names end up in file names and in a `{split}-*` glob, so keep them to one unambiguous token.
_SPLIT_RE = re.compile(r"^[A-Za-z0-9_]+$")


def read_manifest(directory) -> dict:
  """Reads `directory/manifest.json`; a clear DataError when it is missing or not a JSON object."""
  path = os.path.join(os.fspath(directory), MANIFEST)
  if not os.path.isdir(directory):
    raise DataError(directory, "directory does not exist")
  if not os.path.exists(path):
    raise DataError(path, "missing: the directory holds no finished dataset (wrong path, or an "
                          "interrupted write; rerun the job that writes it)")
  try:
    with open(path) as f:
      manifest = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise CorruptRecordError(path, f"not valid JSON ({e})") from e
  if not isinstance(manifest, dict):
    raise CorruptRecordError(path, f"expected a JSON object, got {type(manifest).__name__}")
  return manifest


# ----------------------------------------------------------------------------------------------------
# tf.train.Example encoding.
# ----------------------------------------------------------------------------------------------------

def _bytes_feature(value: bytes):
  return tf_example.Feature(bytes_list=tf_example.BytesList(value=[value]))


def _str_feature(value: str):
  return _bytes_feature(value.encode("utf-8"))


def _int_feature(value: int):
  return tf_example.Feature(int64_list=tf_example.Int64List(value=[int(value)]))


def parse_example(data: bytes, where) -> dict:
  example = tf_example.Example()
  try:
    example.ParseFromString(bytes(data))
  except Exception as e:  # protobuf raises its own DecodeError type; the file is bad either way.
    raise CorruptRecordError(where, f"not a tf.train.Example ({e})") from e
  return example.features.feature


def feature_value(features, key, kind, where):
  """One value of a feature; CorruptRecordError when absent or of another kind."""
  if key not in features:
    raise CorruptRecordError(where, f"missing feature {key!r}")
  values = getattr(features[key], kind).value
  if kind != "float_list" and len(values) != 1:
    raise CorruptRecordError(where, f"feature {key!r} should hold one {kind} value, has {len(values)}")
  return values if kind == "float_list" else values[0]


def feature_str(features, key, where) -> str:
  return feature_value(features, key, "bytes_list", where).decode("utf-8")


def _json_dumps(value, name, where) -> str:
  if not isinstance(value, dict):
    raise DataError(where, f"{name} must be a dict, got {type(value).__name__}")
  try:
    return json.dumps(value, sort_keys=True, default=fileio.json_default)
  except (TypeError, ValueError) as e:
    raise DataError(where, f"{name} is not JSON serialisable ({e})") from e


def encode_audio_example(ex: dict) -> bytes:
  """Serialises an audio example after `validate_audio_example` (DataError naming its id)."""
  ex = validate_audio_example(ex)
  return _encode_valid_audio_example(ex, audio_sha256(ex["audio"]))


def audio_sha256(audio: np.ndarray) -> str:
  """Content hash of decoded audio (float32 little-endian samples): the same recording under two ids
  or two file names hashes alike."""
  return hashlib.sha256(np.ascontiguousarray(audio, dtype="<f4").tobytes()).hexdigest()


def _encode_valid_audio_example(ex: dict, audio_digest: str) -> bytes:
  where = ex["id"]
  feature = {
      "id": _str_feature(ex["id"]),
      "dataset": _str_feature(ex["dataset"]),
      "subject_id": _str_feature(ex["subject_id"]),
      "split": _str_feature(ex["split"]),
      # Raw little-endian float32 bytes: an order of magnitude faster to parse than a float_list.
      "audio": _bytes_feature(ex["audio"].astype("<f4").tobytes()),
      "audio_sha256": _str_feature(audio_digest),
      "num_samples": _int_feature(ex["audio"].shape[0]),
      "sample_rate": _int_feature(ex["sample_rate"]),
      "labels": _str_feature(_json_dumps(ex["labels"], "labels", where)),
      "metadata": _str_feature(_json_dumps(ex["metadata"], "metadata", where)),
  }
  return tf_example.Example(features=tf_example.Features(feature=feature)).SerializeToString()


def decode_audio_example(data: bytes, where="<audio record>") -> dict:
  """Parses an audio example; CorruptRecordError naming the example when fields disagree."""
  features = parse_example(data, where)
  example_id = feature_str(features, "id", where)
  audio_bytes = feature_value(features, "audio", "bytes_list", example_id)
  num_samples = feature_value(features, "num_samples", "int64_list", example_id)
  if len(audio_bytes) != 4 * num_samples:
    raise CorruptRecordError(example_id, f"audio holds {len(audio_bytes)} bytes, expected "
                                         f"{4 * num_samples} for num_samples={num_samples}")
  try:
    labels = json.loads(feature_str(features, "labels", example_id))
    metadata = json.loads(feature_str(features, "metadata", example_id))
  except json.JSONDecodeError as e:
    raise CorruptRecordError(example_id, f"labels/metadata are not valid JSON ({e})") from e
  return {
      "id": example_id,
      "dataset": feature_str(features, "dataset", example_id),
      "subject_id": feature_str(features, "subject_id", example_id),
      "split": feature_str(features, "split", example_id),
      # A copy: frombuffer would give a read-only view that in-place augmentations would trip on.
      "audio": np.frombuffer(audio_bytes, dtype="<f4").astype(np.float32),
      "audio_sha256": feature_str(features, "audio_sha256", example_id),
      "num_samples": int(num_samples),
      "sample_rate": int(feature_value(features, "sample_rate", "int64_list", example_id)),
      "labels": labels,
      "metadata": metadata,
  }


# ----------------------------------------------------------------------------------------------------
# Audio datasets: ArrayRecord shards per split + manifest.json.
# ----------------------------------------------------------------------------------------------------

def validate_audio_example(ex: dict) -> dict:
  """Checks one example and fills optional fields; DataError naming the example id."""
  if not isinstance(ex, dict):
    raise DataError("<example>", f"expected a dict, got {type(ex).__name__}")
  example_id = ex.get("id")
  if not isinstance(example_id, str) or not example_id:
    raise DataError(repr(example_id), "example id must be a non-empty string")
  out = dict(ex)
  for key in ("dataset", "split"):
    if not isinstance(ex.get(key), str) or not ex[key]:
      raise DataError(example_id, f"{key!r} must be a non-empty string, got {ex.get(key)!r}")
  if not _SPLIT_RE.match(ex["split"]):
    raise DataError(example_id, f"split {ex['split']!r} must match {_SPLIT_RE.pattern} (it names files)")
  out["subject_id"] = str(ex.get("subject_id", ""))
  out["labels"] = ex.get("labels") or {}
  out["metadata"] = ex.get("metadata") or {}
  sample_rate = ex.get("sample_rate")
  if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
    raise DataError(example_id, f"sample_rate must be a positive int, got {sample_rate!r}")
  out["sample_rate"] = int(sample_rate)
  audio = ex.get("audio")
  if not isinstance(audio, np.ndarray) or audio.dtype != np.float32:
    dtype = getattr(audio, "dtype", type(audio).__name__)
    raise DataError(example_id, f"audio must be a float32 numpy array, got {dtype}")
  if audio.ndim != 1 or audio.size == 0:
    raise DataError(example_id, f"audio must be 1-D and non-empty, got shape {audio.shape}")
  if not np.isfinite(audio).all():
    raise DataError(example_id, "audio contains NaN or inf")
  if "num_samples" in ex and int(ex["num_samples"]) != audio.shape[0]:
    raise DataError(example_id, f"num_samples={ex['num_samples']} but audio has {audio.shape[0]} samples")
  out["num_samples"] = audio.shape[0]
  return out


def _skipped_entry(item) -> dict:
  """Normalises a skipped-input note: a dict with id/path + reason, a DataError, or (path, reason)."""
  if isinstance(item, DataError):
    return {"path": item.where, "reason": item.reason}
  if isinstance(item, dict):
    if "reason" not in item or not ({"id", "path"} & item.keys()):
      raise ValueError(f"skipped entry {item!r} needs 'reason' and 'id' or 'path'")
    return {k: str(v) for k, v in item.items()}
  where, reason = item
  return {"path": str(where), "reason": str(reason)}


def shard_name(prefix: str, index: int, count: int, ext: str) -> str:
  return f"{prefix}-{index:05d}-of-{count:05d}.{ext}"


class _SplitWriter:
  """Round-robin writer of one split's shards, under temporary names until `move_to`."""

  def __init__(self, tmp_dir: str, split: str, num_shards: int):
    self.split = split
    self.paths = [os.path.join(tmp_dir, f"{split}.{i}") for i in range(num_shards)]
    self.writers = [None] * num_shards
    self.shard_ids = [[] for _ in range(num_shards)]
    self.shard_digests = [hashlib.sha256() for _ in range(num_shards)]
    self.count = 0

  def write(self, example_id: str, payload: bytes, content: bytes):
    i = self.count % len(self.paths)
    if self.writers[i] is None:  # Opened lazily: a small split must not leave empty 128 KiB shards.
      self.writers[i] = array_record_module.ArrayRecordWriter(self.paths[i], "group_size:1")
    self.writers[i].write(payload)
    self.shard_ids[i].append(example_id)
    self.shard_digests[i].update(hashlib.sha256(content).digest())
    self.count += 1

  def content_sha256(self) -> str:
    """A digest of every record (ids, audio, labels, metadata) in reading order: equal iff the split's
    content is, whenever and wherever it was written."""
    digest = hashlib.sha256()
    for shard in self.shard_digests[:self.num_files]:
      digest.update(shard.digest())
    return digest.hexdigest()

  def ids(self) -> list[str]:
    """The ids in the order `AudioRecordSource` reads them (shard after shard)."""
    return [example_id for ids in self.shard_ids for example_id in ids]

  def close(self):
    """Closes (flushes) every shard once, even when one fails; raises the first failure.

    A full disk shows here, when the writers flush their last chunks.
    """
    failure = None
    for i, writer in enumerate(self.writers):
      self.writers[i] = None
      try:
        if writer is not None:
          writer.close()
      except Exception as e:  # pylint: disable=broad-except  (re-raised below)
        failure = failure or e
    if failure is not None:
      raise failure

  def verify(self):
    """Reopens the closed shards and counts their records: what was written can be read back."""
    found = sum(_count_records(p) for p in self.paths[:self.num_files])
    if found != self.count:
      raise CorruptRecordError(self.paths[0], f"split {self.split!r}: wrote {self.count} records, "
                                              f"read back {found}")

  @property
  def num_files(self) -> int:
    return min(self.count, len(self.paths))

  def names(self) -> list[str]:
    return [shard_name(self.split, i, self.num_files, "array_record") for i in range(self.num_files)]

  def move_to(self, out_dir: str):
    """Renames the closed, verified shards to their final `{split}-i-of-n` names in out_dir."""
    for path, name in zip(self.paths, self.names()):
      os.replace(path, os.path.join(out_dir, name))


def _remove_previous_dataset(out_dir: str) -> None:
  """Deletes an older manifest (first: the dataset stops looking valid) and its shards."""
  manifest = os.path.join(out_dir, MANIFEST)
  if os.path.exists(manifest):
    os.remove(manifest)
  for path in glob.glob(os.path.join(glob.escape(out_dir), "*-*-of-*.array_record")):
    if _SHARD_RE.match(os.path.basename(path)):
      os.remove(path)


def _remove_stale_partials(out_dir: str, keep: str) -> None:
  """Removes temporary directories that killed writers (SIGKILL, power loss) left behind."""
  for path in glob.glob(os.path.join(glob.escape(out_dir), ".partial-*")):
    if os.path.abspath(path) != os.path.abspath(keep):
      shutil.rmtree(path, ignore_errors=True)


def write_audio_records(out_dir, examples: Iterable[dict], *, dataset: str, num_shards: int = 1,
                        skipped: Sequence = (), warnings: Sequence = (), inputs: dict | None = None) -> dict:
  """Writes examples into `out_dir/{split}-{i:05d}-of-{n:05d}.array_record` + manifest.json.

  Examples may come from a generator of unknown length; each is validated (DataError naming its id).
  Shards are filled round-robin, so a split with fewer than `num_shards` examples gets fewer shards.
  Everything is written under a hidden temporary directory inside `out_dir`, closed, read back and
  only then moved into place, the manifest last. A failed write (a full disk, a bad example, an
  interruption) leaves an older dataset in `out_dir` as it was and removes its temporary files.
  Every record carries the sha256 of its decoded audio: the same audio in two splits is a DataError
  naming both ids; repeats within a split are listed in the manifest (`duplicates_within_split`).
  `skipped` and `warnings` (files kept with a note) are read after `examples` is exhausted, so lists
  that the example generator appends to work.

  Returns the manifest dict.
  """
  if num_shards < 1:
    raise ValueError(f"num_shards must be >= 1, got {num_shards}")
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  tmp_dir = tempfile.mkdtemp(prefix=".partial-", dir=out_dir)
  splits: dict[str, _SplitWriter] = {}
  try:
    seen, label_keys, sample_rate = set(), set(), None
    first_with_audio, duplicates_within_split = {}, []  # audio sha256 -> (id, split)
    subjects, label_counts = {}, {}  # split -> subject ids; split -> label -> value -> count
    metadata_keys, source_rates = set(), {}
    for ex in examples:
      ex = validate_audio_example({"dataset": dataset, **ex} if isinstance(ex, dict) else ex)
      if ex["dataset"] != dataset:
        raise DataError(ex["id"], f"dataset {ex['dataset']!r} differs from {dataset!r}")
      if ex["id"] in seen:
        raise DataError(ex["id"], f"duplicate example id in dataset {dataset!r}")
      seen.add(ex["id"])
      digest = audio_sha256(ex["audio"])
      if digest in first_with_audio:
        other_id, other_split = first_with_audio[digest]
        if other_split != ex["split"]:
          raise DataError(ex["id"], f"same audio as {other_id!r}: one recording in splits "
                                    f"{other_split!r} and {ex['split']!r} would leak into the test set; "
                                    "drop one of the two rows")
        duplicates_within_split.append({"id": ex["id"], "same_audio_as": other_id, "split": ex["split"]})
      else:
        first_with_audio[digest] = (ex["id"], ex["split"])
      if sample_rate is None:
        sample_rate = ex["sample_rate"]
      elif ex["sample_rate"] != sample_rate:
        raise DataError(ex["id"], f"sample_rate {ex['sample_rate']} differs from {sample_rate} of "
                                  "earlier examples (resample at ingestion)")
      label_keys.update(ex["labels"])
      metadata_keys.update(ex["metadata"])
      rate = ex["metadata"].get("original_sample_rate")
      if rate:
        source_rates[str(rate)] = source_rates.get(str(rate), 0) + 1
      subjects.setdefault(ex["split"], set()).add(ex["subject_id"] or ex["id"])
      for key, value in ex["labels"].items():
        counts = label_counts.setdefault(ex["split"], {}).setdefault(key, {})
        counts[str(value)] = counts.get(str(value), 0) + 1
      if ex["split"] not in splits:
        splits[ex["split"]] = _SplitWriter(tmp_dir, ex["split"], num_shards)
      content = json.dumps({k: ex[k] for k in ("id", "subject_id", "split", "sample_rate", "labels",
                                                "metadata")} | {"audio_sha256": digest},
                           sort_keys=True, default=str).encode()
      splits[ex["split"]].write(ex["id"], _encode_valid_audio_example(ex, digest), content)
    if not seen:
      raise DataError(out_dir, f"no examples to write for dataset {dataset!r}")
    skipped = [_skipped_entry(s) for s in skipped]
    # Everything is closed, read back and the manifest written beside the shards before anything of
    # an older dataset in out_dir is touched: a full disk or a crash up to here leaves it intact.
    for writer in splits.values():
      writer.close()
    for writer in splits.values():
      writer.verify()
    manifest = {
        "dataset": dataset,
        "sample_rate": sample_rate,
        "counts": {name: w.count for name, w in sorted(splits.items())},
        "files": {name: w.names() for name, w in sorted(splits.items())},
        "ids": {name: w.ids() for name, w in sorted(splits.items())},
        "records_sha256": {name: w.content_sha256() for name, w in sorted(splits.items())},
        "label_keys": sorted(label_keys),
        "metadata_keys": sorted(metadata_keys),
        "source_sample_rates": source_rates,   # the files' own rates (prepare's original_sample_rate)
        "subject_counts": {name: len(ids) for name, ids in sorted(subjects.items())},
        "label_counts": {name: {k: dict(sorted(v.items())) for k, v in sorted(counts.items())}
                         for name, counts in sorted(label_counts.items())},
        "num_examples": len(seen),
        "skipped": skipped,
        "warnings": [dict(w) for w in warnings],
        "duplicates_within_split": duplicates_within_split,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if inputs is not None:
      manifest["inputs"] = inputs  # what shaped the records (acula_jax.data.prepare's fingerprint)
    staged_manifest = os.path.join(tmp_dir, MANIFEST)
    fileio.write_json_atomic(staged_manifest, manifest)
    # The swap: renames within one filesystem, which need no space; the manifest goes last.
    _remove_previous_dataset(out_dir)
    _remove_stale_partials(out_dir, keep=tmp_dir)
    for writer in splits.values():
      writer.move_to(out_dir)
    os.replace(staged_manifest, os.path.join(out_dir, MANIFEST))
    return manifest
  finally:
    for writer in splits.values():
      try:
        writer.close()
      except Exception:  # pylint: disable=broad-except  (the write's own error is the one to report)
        pass
    shutil.rmtree(tmp_dir, ignore_errors=True)


def audio_record_paths(data_dir, split: str) -> list[str]:
  """The sorted shard paths of a split; DataError naming data_dir and split when incomplete or absent."""
  data_dir = os.fspath(data_dir)
  paths = sorted(glob.glob(os.path.join(glob.escape(data_dir), f"{glob.escape(split)}-*-of-*.array_record")))
  paths = [p for p in paths if (m := _SHARD_RE.match(os.path.basename(p))) and m["prefix"] == split]
  if not paths:
    found = sorted(os.listdir(data_dir)) if os.path.isdir(data_dir) else "directory does not exist"
    raise DataError(data_dir, f"no ArrayRecord shards for split {split!r} "
                              f"(expected {split}-00000-of-NNNNN.array_record; found: {found})")
  counts = {int(_SHARD_RE.match(os.path.basename(p))["count"]) for p in paths}
  if len(counts) != 1 or len(paths) != counts.pop():
    raise CorruptRecordError(data_dir, f"split {split!r} has an incomplete or mixed shard set: "
                                       f"{[os.path.basename(p) for p in paths]}")
  return paths


def _count_records(path: str) -> int:
  """Opens one ArrayRecord file; a truncated or damaged file fails here (its footer is unreadable)."""
  try:
    reader = array_record_module.ArrayRecordReader(path)
    try:
      return reader.num_records()
    finally:
      reader.close()
  except RuntimeError as e:  # array_record reports every format error as RuntimeError.
    raise CorruptRecordError(path, f"unreadable ArrayRecord file ({e})") from e


class AudioRecordSource:
  """Random-access source of decoded audio examples of one split (a grain RandomAccessDataSource).

  Checks the shards against manifest.json (file names and counts), and turns ArrayRecord failures
  (truncation, checksum mismatch) into CorruptRecordError naming the file.
  """

  def __init__(self, data_dir, split: str):
    self.data_dir = os.fspath(data_dir)
    self.split = split
    self.manifest = read_manifest(self.data_dir)
    self.paths = audio_record_paths(self.data_dir, split)
    self._check_manifest()
    counts = [_count_records(p) for p in self.paths]
    if sum(counts) != self.manifest["counts"][split]:
      raise CorruptRecordError(self.data_dir, f"split {split!r} holds {sum(counts)} records, manifest "
                                              f"says {self.manifest['counts'][split]}")
    self._ends = np.cumsum(counts)
    # `path[start:end]` tells grain the record count, so it does not reopen every file to count again.
    self._source = grain.sources.ArrayRecordDataSource([f"{p}[0:{n}]" for p, n in zip(self.paths, counts)])

  def _check_manifest(self):
    files = self.manifest.get("files", {}).get(self.split)
    if files is None or self.split not in self.manifest.get("counts", {}):
      raise DataError(os.path.join(self.data_dir, MANIFEST), f"no split {self.split!r} in the manifest "
                      f"(splits: {sorted(self.manifest.get('counts', {}))})")
    if sorted(files) != [os.path.basename(p) for p in self.paths]:
      raise CorruptRecordError(self.data_dir, f"shards of split {self.split!r} differ from the manifest: "
                                              f"{files} vs {[os.path.basename(p) for p in self.paths]}")

  def __len__(self) -> int:
    return len(self._source)

  def _path_of(self, index: int) -> str:
    return self.paths[int(np.searchsorted(self._ends, index, side="right"))]

  def __getitem__(self, index) -> dict:
    index = index.__index__()
    if not 0 <= index < len(self):
      raise IndexError(f"{self.data_dir}: index {index} out of range for split {self.split!r} ({len(self)})")
    path = self._path_of(index)
    try:
      data = self._source[index]
    except RuntimeError as e:
      raise CorruptRecordError(path, f"cannot read record {index} ({e})") from e
    return decode_audio_example(data, where=f"{path}[record {index}]")

  def __repr__(self):
    return f"AudioRecordSource({self.data_dir!r}, {self.split!r}, n={len(self)})"


def split_dirs(records_dirs) -> list[str]:
  """A records folder, a comma-separated list of them or a sequence -> [folder, ...] (at least one)."""
  if isinstance(records_dirs, (str, os.PathLike)):
    items = os.fspath(records_dirs).split(",")
  else:
    items = list(records_dirs)
  dirs = [os.fspath(d).strip() for d in items if os.fspath(d).strip()]
  if not dirs:
    raise ValueError(f"no records folder given ({records_dirs!r})")
  return dirs


class ConcatRecordSource:
  """Several `AudioRecordSource`s of one split read as one (index i runs through them in order).

  How training mixes datasets: `config.data.records_dir = "A,B"` trains on both folders' split.
  Example ids must be unique across the folders (the teacher join is by id); `acula_jax.text.reports`
  checks that when it writes the reports of several folders.
  """

  def __init__(self, sources: list):
    self.sources = list(sources)
    self.split = self.sources[0].split
    self._ends = np.cumsum([len(s) for s in self.sources])

  def __len__(self) -> int:
    return int(self._ends[-1])

  def __getitem__(self, index) -> dict:
    index = index.__index__()
    if not 0 <= index < len(self):
      raise IndexError(f"index {index} out of range for split {self.split!r} ({len(self)}) of {self}")
    part = int(np.searchsorted(self._ends, index, side="right"))
    return self.sources[part][index - (int(self._ends[part - 1]) if part else 0)]

  def __repr__(self):
    return f"ConcatRecordSource({[s.data_dir for s in self.sources]!r}, {self.split!r}, n={len(self)})"


def split_ids(records_dirs, split: str) -> list[str]:
  """The example ids of a split in the order `open_split` serves them, from the manifests alone."""
  ids = []
  for directory in split_dirs(records_dirs):
    manifest = read_manifest(directory)
    if split not in manifest.get("ids", {}):
      raise DataError(directory, f"manifest lists no ids for split {split!r} (written by an older "
                                 "version, or no such split): re-run acula_jax.data.prepare")
    ids += manifest["ids"][split]
  return ids


class SubsetSource:
  """The records of a source at the given indices (e.g. training rows that have a teacher embedding)."""

  def __init__(self, source, indices):
    self._source = source
    self._indices = list(indices)

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, index) -> dict:
    return self._source[self._indices[index]]

  def __repr__(self):
    return f"SubsetSource({self._source!r}, {len(self._indices)} of {len(self._source)})"


def open_split(records_dirs, split: str):
  """The `split` of one records folder, or of several (comma-separated) read one after another."""
  sources = [AudioRecordSource(d, split) for d in split_dirs(records_dirs)]
  return sources[0] if len(sources) == 1 else ConcatRecordSource(sources)
