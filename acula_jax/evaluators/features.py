"""Features of the encoders and baselines on prepared records, computed once and cached.

Every recording is cut into clip-length chunks (the last one zero-padded when it is at
least half a clip, or when it is the only one), each chunk is encoded and the chunk features are
averaged (OPERA's protocol for OPERA-GT; CNN/Swin encoders get the task's OPERA input seconds as the
chunk length; AudioMAE its 1024 frames of 10 ms). Each encoder reads its family's front end
(`frontends.frontend_for`: OPERA's log-mel, AudioMAE's Kaldi fbank). Features are computed once and
cached under W/eval/features/, keyed by the records (the hash of their content, so every task on the
same records shares them), the split, the encoder's
parameter or checkpoint hash and the feature config (front end, window); a rerun reads them back.
`Setup` is what an evaluation needs besides its tasks; `task_records_dir` finds a task's records.
"""
import collections
import concurrent.futures
import dataclasses
import functools
import hashlib
import json
import os
import pathlib
from typing import Callable

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from acula_jax import audio
from acula_jax import checkpointing
from acula_jax import errors
from acula_jax import fileio
from acula_jax import input_pipeline
from acula_jax import models
from acula_jax.audio import frontends
from acula_jax.audio import io as audio_io
from acula_jax.data import records
from acula_jax.evaluators import baselines


SPLITS = ("train", "valid", "test")
FEATURE_FORMAT = 1  # bump when the chunking rule or the cache layout changes


def chunk(wave: np.ndarray, window: int) -> list:
  """Clip-length chunks of a recording (see the module docstring for the rule)."""
  full, rest = divmod(len(wave), window)
  chunks = [wave[i * window:(i + 1) * window] for i in range(full)]
  if full == 0 or rest >= window // 2:
    chunks.append(audio_io.crop_or_pad(wave[full * window:], window, offset=0))
  return chunks


class _ChunkAccumulator:
  """Streams recordings through a chunk featurizer in fixed-shape batches; averages per recording."""

  def __init__(self, featurizer: baselines.Featurizer):
    self.featurizer = featurizer
    self.fn = featurizer.function()
    self.pieces, self.owners = [], []
    self.sums, self.counts, self.durations = {}, {}, {}

  def add(self, row: int, wave: np.ndarray):
    for piece in chunk(wave, self.featurizer.window):
      self.pieces.append(piece)
      self.owners.append(row)
    self.durations[row] = len(wave) / audio.SAMPLE_RATE
    while len(self.pieces) >= self.featurizer.batch_size:
      self._flush()

  def _flush(self):
    size = self.featurizer.batch_size
    batch, owners = self.pieces[:size], self.owners[:size]
    del self.pieces[:size], self.owners[:size]
    padded = np.zeros((size, self.featurizer.window), np.float32)  # one shape: one compilation
    padded[:len(batch)] = batch
    for owner, vector in zip(owners, np.asarray(self.fn(padded), np.float64)[:len(batch)]):
      self.sums[owner] = self.sums.get(owner, 0.0) + vector
      self.counts[owner] = self.counts.get(owner, 0) + 1

  def result(self, num_rows: int) -> np.ndarray:
    while self.pieces:
      self._flush()
    features = np.stack([self.sums[i] / self.counts[i] for i in range(num_rows)]).astype(np.float32)
    if self.featurizer.with_duration:
      duration = np.asarray([self.durations[i] for i in range(num_rows)], np.float32)[:, None]
      features = np.concatenate([features, duration], axis=1)
    return features


class _RecordingAccumulator:
  """One vector per whole recording (openSMILE), computed on a worker thread.

  openSMILE runs in C through ctypes, which releases the GIL, so on its own thread it overlaps with the
  encoders' jitted batches instead of adding to them (about half the wall time of a cold evaluation
  on 2 cores). One thread only: the featurizer (e.g. one `opensmile.Smile`) is never shared between
  threads. At most `MAX_PENDING` recordings wait, so memory stays bounded when it falls behind.
  """
  MAX_PENDING = 32

  def __init__(self, featurizer: baselines.Featurizer):
    self.fn = featurizer.function()
    self.vectors = {}
    self.pending = collections.deque()
    self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=featurizer.name)

  def add(self, row: int, wave: np.ndarray):
    self.pending.append((row, self.pool.submit(self.fn, wave)))
    while len(self.pending) > self.MAX_PENDING:
      self._collect()

  def _collect(self):
    row, future = self.pending.popleft()
    self.vectors[row] = np.asarray(future.result(), np.float32)  # re-raises the worker's error here

  def result(self, num_rows: int) -> np.ndarray:
    try:
      while self.pending:
        self._collect()
    finally:
      self.pool.shutdown(wait=True, cancel_futures=True)
    return np.stack([self.vectors[i] for i in range(num_rows)])


def accumulator(featurizer: baselines.Featurizer):
  return (_ChunkAccumulator if featurizer.kind == "chunks" else _RecordingAccumulator)(featurizer)


def featurize_waves(waves, featurizer: baselines.Featurizer, *, desc: str = "features") -> np.ndarray:
  """One feature vector per waveform of an iterable (`acula_jax.tools.extract` uses this)."""
  acc, n = accumulator(featurizer), 0
  for n, wave in enumerate(tqdm(waves, desc=desc, unit="rec", leave=False), start=1):
    acc.add(n - 1, wave)
  return acc.result(n) if n else np.zeros((0, 0), np.float32)


def _sha(obj) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def params_digest(module: nnx.Module) -> str:
  """sha256 of an encoder's class, variable paths, shapes, dtypes and values (params + BatchNorm stats)."""
  state = nnx.to_pure_dict(nnx.state(module, nnx.Any(nnx.Param, nnx.BatchStat)))
  digest = hashlib.sha256(type(module).__name__.encode())
  for path, leaf in jax.tree_util.tree_leaves_with_path(state):
    value = np.asarray(leaf)
    digest.update(f"{jax.tree_util.keystr(path)}:{value.dtype}:{value.shape}".encode())
    digest.update(np.ascontiguousarray(value).tobytes())
  return digest.hexdigest()


def directory_digest(path) -> str:
  """sha256 of every file under an export directory (names and bytes): the checkpoint's identity."""
  digest = hashlib.sha256()
  root = pathlib.Path(path)
  for file in sorted(p for p in root.rglob("*") if p.is_file()):
    digest.update(str(file.relative_to(root)).encode())
    digest.update(fileio.sha256_file(file).encode())
  return digest.hexdigest()


@dataclasses.dataclass
class Encoder:
  """An encoder to evaluate: loaded on first use, so cached features never need the weights."""
  name: str
  family: str                      # opera_gt | opera_ce | opera_ct | audiomae
  digest: str
  load: Callable
  frames: int | None = None        # fixed input frames (ViTs); None = the task's seconds
  spec_shape: tuple | None = None  # the model's input (frames, bins): sizes AudioMAE's default fbank
  _module: nnx.Module | None = None

  def module(self) -> nnx.Module:
    if self._module is None:
      self._module = self.load()
    return self._module


def from_module(name: str, module: nnx.Module, *, family="opera_gt", frames=None) -> Encoder:
  spec_shape = getattr(module, "spec_shape", None)
  return Encoder(name, family, params_digest(module), lambda: module, frames,
                 tuple(spec_shape) if spec_shape is not None else None, module)


def _model_frames(model_config: dict):
  if "spec_shape" in model_config:
    return int(model_config["spec_shape"][0])
  return None


def from_export(name: str, path) -> Encoder:
  """An exported encoder (train's export/ or `acula_jax.tools.convert` output), loaded lazily."""
  directory = checkpointing._export_dir(path)  # pylint: disable=protected-access
  manifest = json.loads((directory / "manifest.json").read_text())
  model = manifest.get("model", {})
  family = model.get("name", "opera_gt")
  frames = _model_frames(model) if family in ("opera_gt", "audiomae") else None
  spec_shape = tuple(model["spec_shape"]) if "spec_shape" in model else None

  return Encoder(name, family, directory_digest(directory), lambda: checkpointing.load_encoder(directory),
                 frames, spec_shape)


@functools.partial(jax.jit, static_argnames=("graphdef", "audio_items"))
def _features(graphdef, state, waves, audio_items):
  """Encoder features of a batch of waves; one compilation per architecture, front end and shape."""
  spec = frontends.spectrogram(waves, **dict(audio_items))
  return nnx.merge(graphdef, state).features(spec, train=False)


def encoder_audio_config(encoder: Encoder, audio_config: dict) -> dict:
  """The front end `encoder` takes: `audio_config` if it is its family's kind, else the family's default
  (an OPERA evaluation config and an AudioMAE export: AudioMAE's fbank of the model's input shape)."""
  return frontends.frontend_for(models.get_model(encoder.family).FRONTEND, audio_config,
                                spec_shape=encoder.spec_shape)


def _encoder_fn(encoder: Encoder, audio_config: dict) -> Callable:
  """[B, n] waves -> [B, d] features of an encoder (loaded now if it was not)."""
  graphdef, state = nnx.split(encoder.module())
  items = tuple(sorted(encoder_audio_config(encoder, audio_config).items()))
  return lambda waves: _features(graphdef, state, jnp.asarray(waves), items)


def encoder_window(encoder: Encoder, task, audio_config: dict, default_window: int | None = None) -> int:
  """Chunk length in samples: the model's fixed input, else `default_window`, else the task's seconds."""
  if encoder.frames:
    return frontends.window_samples(encoder.frames, encoder_audio_config(encoder, audio_config))
  if default_window:
    return default_window
  return int(round(task.audio_seconds(encoder.family) * audio.SAMPLE_RATE))


def encoder_featurizer(encoder: Encoder, audio_config: dict, window: int, *,
                       batch_size: int = 32) -> baselines.Featurizer:
  audio_config = encoder_audio_config(encoder, audio_config)
  key = f"{encoder.family}-{encoder.digest[:16]}-{_sha([audio_config, window, FEATURE_FORMAT])[:10]}"
  return baselines.Featurizer(encoder.name, key, "chunks", None, window=window, batch_size=batch_size,
                              factory=lambda: _encoder_fn(encoder, audio_config),
                              info={"family": encoder.family, "digest": encoder.digest,
                                    "window": window, "audio": audio_config})


def _ordered_splits(counts: dict) -> list:
  return [s for s in SPLITS if s in counts] + sorted(s for s in counts if s not in SPLITS)


def _index_row(example: dict) -> dict:
  return {"id": example["id"], "split": example["split"], "subject_id": example["subject_id"] or example["id"],
          "labels": example["labels"], "metadata": example["metadata"],
          "num_samples": int(example["num_samples"])}


def _write_atomic(path: pathlib.Path, write):
  path.parent.mkdir(parents=True, exist_ok=True)
  with fileio.atomic_output(path, "wb") as f:
    write(f)


def _extract_split(records_dir, split: str, featurizers: list, *, total: int, desc: str):
  """Reads one split once: its index rows and every featurizer's features."""
  accumulators = [accumulator(f) for f in featurizers]
  rows = []
  examples = input_pipeline.iterate_split(records_dir, split)
  for example in tqdm(examples, total=total, desc=desc, unit="rec", leave=False):
    for acc in accumulators:
      acc.add(len(rows), example["audio"])
    rows.append(_index_row(example))
  return rows, [acc.result(len(rows)) for acc in accumulators]


class RecordsStore:
  """A prepared records folder with its index and on-disk features cache (none when cache_dir is None)."""

  def __init__(self, records_dir, cache_dir=None):
    self.records_dir = os.fspath(records_dir)
    manifest = records.read_manifest(self.records_dir)
    if "records_sha256" not in manifest:
      raise errors.DataError(self.records_dir, "manifest has no records_sha256 (written by an older "
                                               "version): re-run acula_jax.data.prepare")
    # Keyed on the records' content, not the manifest: an identical re-prepare keeps every feature.
    self.key = _sha(manifest["records_sha256"])[:12]
    self.name = os.path.basename(os.path.normpath(self.records_dir)) or "records"
    self.counts = manifest.get("counts", {})
    self.splits = _ordered_splits(self.counts)
    self.root = pathlib.Path(cache_dir, f"{self.name}-{self.key}") if cache_dir else None
    self._index = None

  def _index_path(self, split):
    return self.root / "index" / f"{split}.json" if self.root else None

  def _feature_path(self, featurizer, split):
    return self.root / featurizer.key / f"{split}.npz" if self.root else None

  def _cached_index(self, split):
    path = self._index_path(split)
    return json.loads(path.read_text()) if path and path.is_file() else None

  def _cached_features(self, featurizer, split, num_rows):
    path = self._feature_path(featurizer, split)
    if not path or not path.is_file():
      return None
    with np.load(path) as data:
      features = data["features"]
    return features if features.shape[0] == num_rows else None

  def _split(self, split: str, featurizers: list):
    """(rows, {featurizer key: features}) of one split, extracting only what the cache lacks."""
    rows = self._cached_index(split)
    found = {}
    for f in featurizers:
      cached = self._cached_features(f, split, len(rows)) if rows is not None else None
      if cached is not None:
        found[f.key] = cached
    missing = [f for f in featurizers if f.key not in found]
    if rows is None or missing:
      names = ", ".join(f.name for f in missing) or "index"
      rows, features = _extract_split(self.records_dir, split, missing, total=self.counts.get(split),
                                      desc=f"{self.name}/{split}: {names}")
      self._save(split, rows, dict(zip([f.key for f in missing], features)), missing)
      found.update(zip([f.key for f in missing], features))
    return rows, found

  def _save(self, split, rows, features: dict, featurizers: list):
    if not self.root:
      return
    _write_atomic(self._index_path(split), lambda f: f.write(json.dumps(rows).encode()))
    for featurizer in featurizers:
      ids = np.asarray([r["id"] for r in rows])
      _write_atomic(self._feature_path(featurizer, split),
                    lambda f, x=features[featurizer.key]: np.savez(f, features=x, ids=ids))
      info_path = self.root / featurizer.key / "info.json"
      if not info_path.exists():
        _write_atomic(info_path, lambda f, fz=featurizer: f.write(json.dumps(
            {"name": fz.name, "kind": fz.kind, **fz.info}, default=str, indent=2).encode()))

  def load(self, featurizers: list):
    """(index rows of every split, {featurizer key: [N, d] features aligned with the rows})."""
    all_rows, parts = [], {f.key: [] for f in featurizers}
    for split in self.splits:
      rows, found = self._split(split, featurizers)
      all_rows += rows
      for key in parts:
        parts[key].append(found[key])
    self._index = all_rows
    return all_rows, {k: np.concatenate(v) if v else np.zeros((0, 0), np.float32) for k, v in parts.items()}

  def index(self) -> list:
    if self._index is None:
      self._index, _ = self.load([])
    return self._index


def records_index(records_dir, cache_dir=None) -> list:
  """Index rows (id, split, subject_id, labels, metadata, num_samples) of every split of a records folder."""
  return RecordsStore(records_dir, cache_dir).index()


@dataclasses.dataclass
class Setup:
  """What the linear probe needs besides the tasks (`linear_probe.Evaluator` builds it from its config)."""
  encoders: list                   # [Encoder]
  baselines: dict                  # display name -> Featurizer (task independent)
  context: object                  # evaluators.Context: front end, out_dir, default window, fallback records
  data_root: str
  feature_batch_size: int
  probe_config: dict               # probe.OPERA_PROTOCOL's keys but seeds
  seeds: int
  tsne_points: int
  aggregate: str                   # scoring.AGGREGATES
  subject_score: str               # scoring.SUBJECT_SCORES
  bootstrap: int
  protocol: str                    # official | cv:K | repeated_cv:K:R (tasks.effective_protocol)
  probes: tuple                    # linear_probe.PROBES
  compare: tuple                   # ((A, B), ...): paired differences A - B


def _no_root(task) -> str:
  return f"no --data_root given (the task reads <data_root>/{task.records})"


def task_records_dir(task, data_root: str, fallback_records: str = "") -> str:
  """Where `task` reads its records: its own folder, else <data_root>/<its records name>, else the
  run's records (`fallback_records`, the demo tasks)."""
  if task.records_dir:
    return task.records_dir
  if data_root:
    return os.path.join(data_root, task.records)
  if fallback_records:
    return fallback_records
  raise ValueError(f"task {task.name}: {_no_root(task)}")


def featurizers_for(task, setup: Setup) -> dict:
  """display name -> Featurizer for one task: the baselines, then the encoders."""
  out = dict(setup.baselines)
  for encoder in setup.encoders:
    out[encoder.name] = featurizer_for(encoder, task, setup.context, setup.feature_batch_size)
  return out


def featurizer_for(encoder: Encoder, task, context, batch_size: int) -> baselines.Featurizer:
  """`encoder`'s featurizer on `task`: its front end and chunk length under the run's `context`."""
  window = encoder_window(encoder, task, context.audio_config, context.default_window)
  return encoder_featurizer(encoder, context.audio_config, window, batch_size=batch_size)


def missing_records(task, data_root: str, fallback_records: str = "") -> str:
  """Why `task` cannot run ("" when its records are there)."""
  try:
    directory = task_records_dir(task, data_root, fallback_records)
  except ValueError:
    return _no_root(task)
  if os.path.isfile(os.path.join(directory, records.MANIFEST)):
    return ""
  return f"no prepared records at {directory} (make them with: {task.prepare_command()})"
