r"""Frozen-feature evaluation: encoders and feature baselines on the registered tasks (OPERA's protocol).

  python -m acula_jax.evaluate --workdir=W --tasks=acula,physionet --data_root=PREPARED_ROOT
  python -m acula_jax.evaluate --workdir=W --tasks=t7_icbhi_copd --data_root=ROOT \
      --encoder=opera_gt --checkpoint=EXPORT_DIR          # an encoder never aligned
  python -m acula_jax.evaluate --workdir=W --tasks=physionet --data_root=ROOT \
      --encoder=before=W0/export --encoder=after=W/export  # a comparison table
  python -m acula_jax.evaluate --workdir=W --tasks=table:/my/records:diagnosis

Without --encoder, the encoders of W are used: its export (the trained encoder) and, when its config
names one, the `init_from` export it started from. `--data_root` holds one prepared records folder per
task family (`acula_jax.tasks`: each task's `records` name and the `prepare` command that makes it).

What happens:
1. Features. Every recording is cut into clip-length chunks (the last one zero-padded when it is at
   least half a clip, or when it is the only one), each chunk is encoded and the chunk features are
   averaged (OPERA's protocol for OPERA-GT; CNN/Swin encoders get the task's OPERA input seconds as the
   chunk length; AudioMAE its 1024 frames of 10 ms). Each encoder reads its family's front end
   (`audio.frontend_for`: OPERA's log-mel, AudioMAE's Kaldi fbank). Features are computed once and
   cached under W/eval/features/, keyed by the records (the hash of their content, so every task on the
   same records shares them), the split, the encoder's
   parameter or checkpoint hash and the feature config (front end, window); a rerun reads them back.
2. Folds (--protocol): each task's own protocol (`official`, OPERA's), or subject-grouped,
   label-stratified K-fold CV repeated R times (`cv:K`, `repeated_cv:K:R`) for tasks whose own protocol
   is a single split. Heads (--probes): `opera`, OPERA's linear probe (`acula_jax.probe`: Adam 1e-4
   decayed x0.97 per epoch, L2 1e-5, 64 epochs, clip 1.0, best validation AUROC) on standardised
   features, every fold and seed in one program; `logreg`, L2 logistic regression with C chosen by
   inner subject-grouped 3-fold CV on each fold's training rows. Regression: leave-one-subject-out with
   OPERA's head (MLP, or least squares for MMLung), MAE and MAPE, mean ± std over folds.
3. Scores (`acula_jax.scoring`), at the levels of --aggregate: per recording, and per subject (each
   subject's recordings as one: the mean, or with --subject_score=max the max, of their probabilities).
   The default `auto` scores both where a subject has several recordings in a task; a task whose
   subjects' recordings disagree on the label keeps the recording level only, with a note. Each number
   carries a 95% interval from --bootstrap resamples of the test subjects.
4. Paired comparisons (--compare=A:B): A - B per task on the same folds and subjects, with a paired
   subject-bootstrap interval and p-value, and the mean over tasks (`scoring.paired`).
5. Output in W/eval/: results.json (every number, per seed and fold, both levels, comparisons, and each
   task's recordings, subjects and class counts per side), results.md (the tables, best per task and
   level in bold, comparisons starred where the interval excludes 0) and report.html (the tables, ROC
   curves, predicted-vs-true plots, intervals, forest plots of the comparisons, t-SNE maps).

`evaluate_encoders(config, out_dir, encoders)` is the same evaluation for `train.train_and_evaluate`.
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

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx
from tqdm import tqdm

from acula_jax import audio
from acula_jax import baselines
from acula_jax import errors
from acula_jax import input_pipeline
from acula_jax import models
from acula_jax import probe
from acula_jax import records
from acula_jax import scoring
from acula_jax import tasks as tasks_lib

SPLITS = ("train", "valid", "test")
BASELINE = baselines.NAMES["logmel"]
FEATURE_FORMAT = 1  # bump when the chunking rule or the cache layout changes
# OPERA's regression MLP is d -> d -> 1; capped so that 6373-d ComParE features do not need a 6373^2 layer
# (x Adam state x seeds). The OPERA encoders' widths (384-1280) are below the cap.
MAX_MLP_HIDDEN = 1280
BOOTSTRAP_SAMPLES = 1000  # subject resamples behind each 95% interval (scoring)


# ----------------------------------------------------------------------------------------------------
# Chunked features.
# ----------------------------------------------------------------------------------------------------

def chunk(wave: np.ndarray, window: int) -> list:
  """Clip-length chunks of a recording (see the module docstring for the rule)."""
  full, rest = divmod(len(wave), window)
  chunks = [wave[i * window:(i + 1) * window] for i in range(full)]
  if full == 0 or rest >= window // 2:
    chunks.append(audio.crop_or_pad(wave[full * window:], window, offset=0))
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
  """One feature vector per waveform of an iterable (`acula_jax.extract` uses this)."""
  acc, n = accumulator(featurizer), 0
  for n, wave in enumerate(tqdm(waves, desc=desc, unit="rec", leave=False), start=1):
    acc.add(n - 1, wave)
  return acc.result(n) if n else np.zeros((0, 0), np.float32)


def chunked_features(waves: list, featurize: Callable, *, window: int, batch_size: int,
                     desc: str = "features") -> np.ndarray:
  """Averages `featurize` ([B, window] -> [B, d]) over each recording's chunks; fixed batch shapes."""
  featurizer = baselines.Featurizer("fn", "fn", "chunks", featurize, window=window, batch_size=batch_size)
  return featurize_waves(waves, featurizer, desc=desc)


# ----------------------------------------------------------------------------------------------------
# Encoders as featurizers.
# ----------------------------------------------------------------------------------------------------

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
    digest.update(records.sha256_file(file).encode())
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
  """An exported encoder (train's export/ or `acula_jax.convert` output), loaded lazily."""
  from acula_jax import checkpointing  # pylint: disable=g-import-not-at-top
  directory = checkpointing._export_dir(path)  # pylint: disable=protected-access
  manifest = json.loads((directory / "manifest.json").read_text())
  model = manifest.get("model", {})
  family = model.get("name", "opera_gt")
  frames = _model_frames(model) if family in ("opera_gt", "audiomae") else None
  spec_shape = tuple(model["spec_shape"]) if "spec_shape" in model else None

  def load():
    if "source" in manifest:  # converted from PyTorch: any encoder kind, BatchNorm statistics included
      from acula_jax import convert  # pylint: disable=g-import-not-at-top
      return convert.load_export(directory)
    return checkpointing.load_encoder(directory)
  return Encoder(name, family, directory_digest(directory), load, frames, spec_shape)


@functools.partial(jax.jit, static_argnames=("graphdef", "audio_items"))
def _features(graphdef, state, waves, audio_items):
  """Encoder features of a batch of waves; one compilation per architecture, front end and shape."""
  spec = audio.spectrogram(waves, **dict(audio_items))
  return nnx.merge(graphdef, state).features(spec, train=False)


def encoder_audio_config(encoder: Encoder, audio_config: dict) -> dict:
  """The front end `encoder` takes: `audio_config` if it is its family's kind, else the family's default
  (an OPERA evaluation config and an AudioMAE export: AudioMAE's fbank of the model's input shape)."""
  return audio.frontend_for(models.get_model(encoder.family).FRONTEND, audio_config,
                            spec_shape=encoder.spec_shape)


def _encoder_fn(encoder: Encoder, audio_config: dict) -> Callable:
  """[B, n] waves -> [B, d] features of an encoder (loaded now if it was not)."""
  graphdef, state = nnx.split(encoder.module())
  items = tuple(sorted(encoder_audio_config(encoder, audio_config).items()))
  return lambda waves: _features(graphdef, state, jnp.asarray(waves), items)


def encoder_window(encoder: Encoder, task, audio_config: dict, default_window: int | None = None) -> int:
  """Chunk length in samples: the model's fixed input, else `default_window`, else the task's seconds."""
  if encoder.frames:
    return audio.window_samples(encoder.frames, encoder_audio_config(encoder, audio_config))
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


# ----------------------------------------------------------------------------------------------------
# Records, their index and cached features.
# ----------------------------------------------------------------------------------------------------

def _ordered_splits(counts: dict) -> list:
  return [s for s in SPLITS if s in counts] + sorted(s for s in counts if s not in SPLITS)


def _index_row(example: dict) -> dict:
  return {"id": example["id"], "split": example["split"], "subject_id": example["subject_id"] or example["id"],
          "labels": example["labels"], "metadata": example["metadata"],
          "num_samples": int(example["num_samples"])}


def _write_atomic(path: pathlib.Path, write):
  path.parent.mkdir(parents=True, exist_ok=True)
  with records.atomic_output(path, "wb") as f:
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
                                               "version): re-run acula_jax.prepare")
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


# ----------------------------------------------------------------------------------------------------
# Probing one task on one feature set.
# ----------------------------------------------------------------------------------------------------

def _probe_config(base: dict, task) -> dict:
  config = dict(base)
  config.update(task.probe_overrides())
  return config


def _standardized(features, fold):
  return probe.standardize(features[fold.train], features[fold.valid], features[fold.test])


def _padded(row_lists) -> tuple:
  """([F, T] rows padded with each list's first row, [F] real counts)."""
  slots = max(len(r) for r in row_lists)
  rows = np.stack([np.pad(r, (0, slots - len(r)), mode="edge") for r in row_lists])
  return rows, np.asarray([len(r) for r in row_lists])


def _classify_folds(task, features, targets, folds, config, seeds) -> list:
  """Test probabilities [S, n_test, C] of every seed's OPERA probe on every fold (one program)."""
  train_rows, num_train = _padded([f.train for f in folds])
  # A fold without validation rows selects its epoch on the training rows.
  val_rows, num_val = _padded([f.valid if len(f.valid) else f.train for f in folds])
  labels = np.nan_to_num(targets, nan=0.0).astype(np.int32)
  proba, _ = probe.train_probes(
      jnp.arange(seeds), features, labels, train_rows, num_train, val_rows, num_val,
      num_classes=len(task.classes),
      epochs=config["epochs"], batch_size=config["batch_size"], learning_rate=config["learning_rate"],
      decay=config["decay"], l2=config["l2"], clip=config.get("clip", 1.0))
  proba = np.asarray(proba)
  return [proba[k][:, fold.test] for k, fold in enumerate(folds)]


def _logistic_folds(task, index, features, targets, folds, *, inner_folds=3, grid=probe.LOGREG_C_GRID) -> list:
  """Test probabilities [1, n_test, C] of an L2 logistic regression per fold, its C chosen by
  subject-grouped inner cross-validation on the fold's training and validation rows (ties: smaller C)."""
  weights, held_out = [], []   # per fit: training rows; the inner fold's held-out rows (None: final fit)
  for fold in folds:
    train = np.concatenate([fold.train, fold.valid])
    inner = tasks_lib.grouped_kfold(task, index, sorted(train.tolist()), inner_folds, seed=0)
    for held in [*inner, None]:
      w = np.zeros(len(features), np.float32)
      w[train] = 1.0
      if held is not None:
        w[held] = 0.0
      weights.append(w)
      held_out.append(held)
  labels = np.nan_to_num(targets, nan=0.0).astype(np.int32)
  proba = np.asarray(probe.fit_logistic_path(features, labels, np.stack(weights), np.asarray(grid, np.float32),
                                             num_classes=len(task.classes)))       # [G, fits, N, C]
  per_fold = inner_folds + 1
  out = []
  for k, fold in enumerate(folds):
    fits = range(k * per_fold, (k + 1) * per_fold - 1)
    scores = np.full((len(grid), inner_folds), np.nan)
    for j, m in enumerate(fits):
      mask = np.zeros((1, len(features)))
      mask[0, held_out[m]] = 1.0
      scores[:, j] = [probe.weighted_macro_auroc(proba[g, m], labels, len(task.classes), mask)[0]
                      for g in range(len(grid))]
    mean = np.nan_to_num(scoring.finite_mean(scores, axis=1), nan=-np.inf)   # no defined inner score: last
    out.append(proba[int(np.argmax(mean)), (k + 1) * per_fold - 1][None, fold.test])
  return out


def _regress_fold(task, features, targets, fold, config, seeds):
  """Test predictions [S, n_test] (one row for the deterministic least-squares head)."""
  x_tr, x_va, x_te = _standardized(features, fold)
  y_tr, y_va = targets[fold.train], targets[fold.valid]
  if task.head == "ols":
    w, b = probe.fit_ols(np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va]))
    return probe.predict_ols(w, b, x_te)[None]
  if not len(y_va):
    x_va, y_va = x_tr, y_tr
  params, _ = probe.train_regressors(
      jnp.arange(seeds), x_tr, jnp.asarray(y_tr, jnp.float32), x_va, jnp.asarray(y_va, jnp.float32),
      hidden=min(x_tr.shape[1], MAX_MLP_HIDDEN), epochs=config["epochs"], batch_size=config["batch_size"],
      learning_rate=config["learning_rate"], decay=config["decay"], l2=config["l2"],
      clip=config.get("clip", 1.0))
  return np.asarray(probe.predict_regression(params, x_te))


def _recording_detail(task, parts) -> dict:
  """What the report plots: pooled test labels with the first seed's probabilities (the seeds' mean
  prediction for regression)."""
  y = np.concatenate([p.y for p in parts])
  if task.is_regression:
    return {"y": y, "pred": np.concatenate([p.pred.mean(0) for p in parts])}
  return {"y": y.astype(int), "proba": np.concatenate([p.pred[0] for p in parts])}


PROBES = ("opera", "logreg")


def probe_task(task, index: list, features: np.ndarray, probe_config: dict, *, seeds: int,
               levels=("recording",), subject_score: str = "mean", bootstrap: int = 0, protocol: str = "official",
               probe_name: str = "opera", namespace: str = ""):
  """(outcome for results.json, details for the report) of one task on one feature matrix.

  `protocol` (`tasks.effective_protocol`) gives the folds, `probe_name` the head (`opera`: OPERA's
  linear probe over `seeds`; `logreg`: logistic regression, C by inner grouped CV; regression tasks
  always use their own head). The outcome holds the first of `levels` (`scoring`), the subject level
  under "subject" when both are asked for, and fold sizes; the details hold what the report plots and
  each level's scored parts (for paired comparisons; subject ids prefixed by `namespace`).
  """
  protocol = tasks_lib.effective_protocol(task, protocol)
  folds = tasks_lib.make_folds(task, index, protocol=protocol)
  config = _probe_config(probe_config, task)
  targets = np.asarray([task.target(r["labels"]) if task.applies_to(r) else np.nan for r in index], np.float64)
  if task.is_regression:
    predictions = [_regress_fold(task, features, targets, f, config, seeds) for f in folds.folds]
  elif probe_name == "logreg":
    predictions = _logistic_folds(task, index, features, targets, folds.folds)
  else:
    predictions = _classify_folds(task, features, targets, folds.folds, config, seeds)
  subject_ids = np.asarray([f"{namespace}/{r['subject_id']}" if namespace else str(r["subject_id"]) for r in index])
  parts = scoring.parts_of(folds, predictions, targets, subject_ids)
  by_level = {"recording": parts, "subject": [scoring.by_subject(p, subject_score) for p in parts]}
  spread = "folds" if protocol.partition(":")[0] in ("cv", "repeated_cv") else "seeds"
  # Replicates once per level: the intervals here, the paired comparisons later (`compare_tasks`).
  reps = {level: scoring.replicates(by_level[level], folds.aggregate, num_classes=len(task.classes),
                                    num_samples=bootstrap) for level in levels} if bootstrap else {}
  scored = {level: scoring.score(by_level[level], folds.aggregate, regression=task.is_regression,
                                 num_classes=len(task.classes), spread=spread) for level in levels}
  for level, level_reps in reps.items():
    scored[level]["ci95"] = scoring.interval(level_reps)
  outcome = {**scored[levels[0]], "level": levels[0]}
  if len(levels) > 1:
    outcome[levels[1]] = {**scored[levels[1]], "level": levels[1]}
  # Per fold (the mean when there are several) for train/valid.
  per_fold = lambda side: int(round(np.mean([len(getattr(f, side)) for f in folds.folds])))
  outcome.update(num_train=per_fold("train"), num_valid=per_fold("valid"), num_folds=len(folds.folds),
                 protocol=protocol, probe="opera" if task.is_regression else probe_name)
  if folds.skipped:
    outcome["skipped_folds"] = [f"{name}: {reason}" for name, reason in folds.skipped]
  detail = _recording_detail(task, parts)
  detail.update(parts={level: by_level[level] for level in levels}, aggregate=folds.aggregate, replicates=reps)
  return outcome, detail


def column_name(encoder: str, probe_name: str, probes) -> str:
  """The results column of an encoder under a probe: the encoder's name alone when only OPERA's probe runs."""
  return encoder if tuple(probes) == ("opera",) else f"{encoder} · {probe_name}"


def compare_tasks(results: dict, details: dict, pairs: list, probes, num_samples: int) -> dict:
  """Paired differences A - B per task, probe and level, and their mean over tasks (`scoring.paired`)."""
  out = {}
  for a, b in pairs:
    for probe_name in probes:
      col_a, col_b = column_name(a, probe_name, probes), column_name(b, probe_name, probes)
      for level in scoring.LEVELS:
        rows, reps = {}, []
        for task, by_column in details.items():
          if col_a not in by_column or col_b not in by_column or level not in by_column[col_a]["parts"]:
            continue
          info = results["task_info"][task]
          # The intervals' replicates (probe_task, same draws and count when it made any) are reused.
          known = tuple(by_column[c]["replicates"].get(level) for c in (col_a, col_b))
          pair = scoring.paired(by_column[col_a]["parts"][level], by_column[col_b]["parts"][level],
                                by_column[col_a]["aggregate"], regression=info["kind"] == tasks_lib.REGRESSION,
                                num_classes=len(info["classes"]), num_samples=num_samples, known_replicates=known)
          reps.append(pair.pop("replicates"))
          rows[task] = pair
        if not rows:
          continue
        entry = {"tasks": rows}
        if len(rows) > 1:
          diff = float(np.mean([r["diff"] for r in rows.values()]))
          entry["mean_over_tasks"] = {"diff": diff, **scoring.difference_test(diff, np.mean(reps, axis=0))}
        out.setdefault(f"{a} vs {b}", {}).setdefault(probe_name, {})[level] = entry
  return out


# ----------------------------------------------------------------------------------------------------
# The evaluation.
# ----------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Setup:
  """What an evaluation needs besides the tasks: featurizers, probe settings and where things go."""
  encoders: list                   # [Encoder]
  baselines: dict                  # display name -> Featurizer (task independent)
  audio_config: dict
  probe_config: dict
  seeds: int
  out_dir: pathlib.Path
  feature_batch_size: int = 32
  default_window: int | None = None  # chunk length for encoders without fixed frames (train path)
  data_root: str = ""
  fallback_records: str = ""       # records of tasks that name none (train path: config.data.records_dir)
  tsne_points: int = 600
  aggregate: str = "auto"          # scoring.AGGREGATES
  subject_score: str = "mean"      # scoring.SUBJECT_SCORES
  bootstrap: int = BOOTSTRAP_SAMPLES
  comparison: str = ""             # "alignment" when the encoders are a run's starting point and result
  protocol: str = "official"       # official | cv:K | repeated_cv:K:R (tasks.effective_protocol)
  probes: tuple = ("opera",)       # PROBES
  compare: tuple = ()              # ((A, B), ...): paired differences A - B


def _no_root(task) -> str:
  return f"no --data_root given (the task reads <data_root>/{task.records})"


def task_records_dir(task, setup: Setup) -> str:
  if task.records_dir:
    return task.records_dir
  if setup.data_root:
    return os.path.join(setup.data_root, task.records)
  if setup.fallback_records:
    return setup.fallback_records
  raise ValueError(f"task {task.name}: {_no_root(task)}")


def featurizers_for(task, setup: Setup) -> dict:
  """display name -> Featurizer for one task: the baselines, then the encoders."""
  out = dict(setup.baselines)
  for encoder in setup.encoders:
    window = encoder_window(encoder, task, setup.audio_config, setup.default_window)
    out[encoder.name] = encoder_featurizer(encoder, setup.audio_config, window,
                                           batch_size=setup.feature_batch_size)
  return out


def _missing_records(task, setup) -> str:
  try:
    directory = task_records_dir(task, setup)
  except ValueError:
    return _no_root(task)
  if os.path.isfile(os.path.join(directory, records.MANIFEST)):
    return ""
  return f"no prepared records at {directory} (make them with: {task.prepare_command()})"


def task_levels(task, index: list, aggregate: str) -> tuple:
  """(levels, note) of one task: `scoring.levels_for`, less the subject level where some subjects'
  recordings disagree on the label (a note says how many; asked for alone, that is an error)."""
  rows = [r for r in index if task.applies_to(r)]
  subjects = [str(r["subject_id"]) for r in rows]
  levels = scoring.levels_for(aggregate, subjects)
  if "subject" not in levels:
    return levels, ""
  conflicts = scoring.conflicting_subjects(subjects, [task.target(r["labels"]) for r in rows])
  if not conflicts:
    return levels, ""
  shown = ", ".join(conflicts[:5]) + (", ..." if len(conflicts) > 5 else "")
  if levels == ("subject",):
    raise errors.UsageError(f"task {task.name}: --aggregate=subject needs one {task.label_key!r} per subject, but "
                            f"{len(conflicts)} subjects' recordings disagree ({shown}); use --aggregate=recording")
  return ("recording",), (f"subject level skipped: {len(conflicts)} of {len(set(subjects))} subjects' recordings "
                          f"carry different {task.label_key!r} values ({shown})")


def check_setup(setup: Setup, names: list):
  """UsageError for a protocol, probe or comparison that cannot run, before any feature is computed."""
  if setup.protocol != "official":
    try:
      tasks_lib.parse_cv(setup.protocol)
    except ValueError as e:
      raise errors.UsageError(f"--protocol: {e}") from None
  unknown = [p for p in setup.probes if p not in PROBES]
  if unknown or not setup.probes:
    raise errors.UsageError(f"--probes: unknown {unknown or 'empty'}; choose from {list(PROBES)}")
  for a, b in setup.compare:
    missing = [n for n in (a, b) if n not in names]
    if missing:
      raise errors.UsageError(f"--compare={a}:{b}: no encoder or baseline named {missing}; names: {names}")


def parse_compare(values) -> tuple:
  """((A, B), ...) from --compare=A:B items (names may hold anything but ':')."""
  pairs = []
  for value in values:
    a, sep, b = value.partition(":")
    if not sep or not a.strip() or not b.strip() or ":" in b:
      raise errors.UsageError(f"--compare={value}: expected A:B, two encoder or baseline names")
    pairs.append((a.strip(), b.strip()))
  return tuple(pairs)


def run(task_list: list, setup: Setup) -> dict:
  """Evaluates every featurizer on every task; writes results.json, results.md and report.html."""
  from acula_jax import report_html  # pylint: disable=g-import-not-at-top
  setup.out_dir.mkdir(parents=True, exist_ok=True)
  featurizer_names = list(setup.baselines) + [e.name for e in setup.encoders]
  check_setup(setup, featurizer_names)
  names = [column_name(n, p, setup.probes) for n in featurizer_names for p in setup.probes]
  results = {"encoders": names, "tasks": {}, "task_info": {}, "skipped_tasks": {},
             "probe": {**setup.probe_config, "seeds": setup.seeds}, "probes": list(setup.probes),
             "protocol": setup.protocol, "features": {},
             "scoring": {"aggregate": setup.aggregate, "subject_score": setup.subject_score,
                         "bootstrap": setup.bootstrap, "comparison": setup.comparison}}
  details, maps = {}, []
  usable = []
  for task in task_list:
    reason = _missing_records(task, setup)
    if reason:
      if setup.data_root or task.records_dir:
        logging.warning("skipping task %s: %s", task.name, reason)
        results["skipped_tasks"][task.name] = reason
        continue
      raise errors.UsageError(f"task {task.name}: {reason}")
    usable.append(task)
  if not usable:
    raise errors.UsageError(f"no task has prepared records (check --data_root): {results['skipped_tasks']}")
  stores = {}
  for task in tqdm(usable, desc="tasks", unit="task"):
    directory = task_records_dir(task, setup)
    store = stores.setdefault(directory, RecordsStore(directory, setup.out_dir / "features"))
    featurizers = featurizers_for(task, setup)
    index, features = store.load(list(featurizers.values()))
    levels, note = task_levels(task, index, setup.aggregate)
    protocol = tasks_lib.effective_protocol(task, setup.protocol)
    results["task_info"][task.name] = task.info() | {
        "records": directory, "levels": list(levels), "protocol": protocol,
        "sizes": tasks_lib.fold_sizes(task, index, tasks_lib.make_folds(task, index, protocol=protocol))}
    if note:
      logging.warning("task %s: %s", task.name, note)
      results["task_info"][task.name]["note"] = note
    runs = [(n, p) for n in featurizers for p in setup.probes if p == "opera" or not task.is_regression]
    for name, probe_name in tqdm(runs, desc=f"probe {task.name}", unit="run", leave=False):
      outcome, detail = probe_task(task, index, features[featurizers[name].key], setup.probe_config,
                                   seeds=setup.seeds, levels=levels, subject_score=setup.subject_score,
                                   bootstrap=setup.bootstrap, protocol=setup.protocol, probe_name=probe_name,
                                   namespace=store.key)
      column = column_name(name, probe_name, setup.probes)
      results["tasks"].setdefault(task.name, {})[column] = outcome
      details.setdefault(task.name, {})[column] = detail
      results["features"].setdefault(name, {})[task.name] = featurizers[name].key
      logging.info("%s / %s: %s %.3f ± %.3f", task.name, column, outcome["metric"], outcome["mean"], outcome["std"])
    maps += report_html.embedding_maps(task, index, {e.name: features[featurizers[e.name].key]
                                                     for e in setup.encoders},
                                       max_points=setup.tsne_points, cache=store)
  if setup.compare:
    results["comparisons"] = compare_tasks(results, details, list(setup.compare), setup.probes,
                                           setup.bootstrap or BOOTSTRAP_SAMPLES)
  records.write_text_atomic(setup.out_dir / "results.json", json.dumps(results, indent=2, default=float))
  table = results_table(results)
  records.write_text_atomic(setup.out_dir / "results.md", table)
  records.write_text_atomic(setup.out_dir / "report.html", report_html.render(results, details, maps))
  print(table)
  return results


def comparisons_table(results: dict) -> list:
  """Markdown lines: per comparison, probe and level, each task's difference with its interval and p."""
  lines = []
  for pair, by_probe in results.get("comparisons", {}).items():
    for probe_name, by_level in by_probe.items():
      for level, entry in by_level.items():
        lines += ["", f"**{pair}** ({probe_name} probe, {level} level): A - B", "",
                  "| task | difference | 95% interval | p |", "|---|---|---|---|"]
        rows = list(entry["tasks"].items()) + ([("mean over tasks", entry["mean_over_tasks"])]
                                               if "mean_over_tasks" in entry else [])
        for task, r in rows:
          mark = " *" if r["excludes_zero"] else ""
          lines.append(f"| {task} | {r['diff']:+.3f}{mark} | [{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}] | "
                       f"{r['p_value']:.3f} |")
  if lines:
    lines += ["", "Paired differences on the same folds and subjects; intervals and p-values from "
              f"{results['scoring'].get('bootstrap') or BOOTSTRAP_SAMPLES} Poisson resamples of the subjects "
              "(one draw per subject shared by both encoders and every task). * : the interval excludes 0."]
  return lines


def results_table(results: dict) -> str:
  """Markdown: one row per task and level, one column per encoder (best mean in bold), then the sizes."""
  names = results["encoders"]
  lines = ["| task | level | metric | " + " | ".join(names) + " |", "|---" * (len(names) + 3) + "|"]
  for task, by_encoder in results["tasks"].items():
    for level in scoring.levels_of(by_encoder):
      outcomes = {n: scoring.at_level(o, level) for n, o in by_encoder.items()}
      best = scoring.best_encoder(outcomes)
      metric = "MAE (MAPE)" if next(iter(outcomes.values()))["metric"] == "mae" else "AUROC"
      cells = [("**{}**" if n == best else "{}").format(scoring.cell_text(outcomes[n])) if n in outcomes else "-"
               for n in names]
      lines.append(f"| {task} | {level} | {metric} | " + " | ".join(cells) + " |")
  lines.append("\n" + scoring.explanation(results))
  lines += ["", "| task | folds | train | valid | test |", "|---|---|---|---|---|"]
  for task in results["tasks"]:
    sizes = results["task_info"][task]["sizes"]
    sides = " | ".join(scoring.side_text(sizes[side]) for side in ("train", "valid", "test"))
    lines.append(f"| {task} | {sizes['folds']} | {sides} |")
  lines.append("\nSizes: recordings / subjects (class counts); with several folds, train and valid are the "
               "mean per fold and test is every fold's test set together.")
  lines += comparisons_table(results)
  for task, info in results["task_info"].items():
    if info.get("note"):
      lines.append(f"\nNote on {task}: {info['note']}")
  for task, reason in results.get("skipped_tasks", {}).items():
    lines.append(f"\nSkipped {task}: {reason}")
  return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------
# Entry points.
# ----------------------------------------------------------------------------------------------------

def _base_probe_config(probe_config) -> dict:
  config = probe_config.to_dict() if hasattr(probe_config, "to_dict") else dict(probe_config)
  seeds = int(config.pop("seeds", 5))
  return config, seeds


def evaluate_encoders(config, out_dir, encoders: dict, *, comparison: str = "") -> dict:
  """Probes every encoder (name -> nnx encoder) and the baselines on `config.eval.tasks`.

  Called at the end of `train.train_and_evaluate` (comparison="alignment" when the encoders are the
  run's starting point and its aligned result); tasks that name no records folder read
  `config.data.records_dir` (the demo tasks), others `config.eval.data_root`/<task records>.
  """
  out_dir = pathlib.Path(out_dir)
  window = input_pipeline.clip_samples(config)
  audio_config = config.audio.to_dict()
  batch_size = config.eval.feature_batch_size
  baseline_names = list(config.eval.get("baselines", ("logmel",)))
  probe_config, seeds = _base_probe_config(config.eval.probe)
  family = config.model.name
  setup = Setup(encoders=[from_module(name, module, family=family) for name, module in encoders.items()],
                baselines=baselines.build(baseline_names, audio_config, window, batch_size=batch_size),
                audio_config=audio_config, probe_config=probe_config, seeds=seeds, out_dir=out_dir,
                feature_batch_size=batch_size, default_window=window,
                data_root=config.eval.get("data_root", ""), fallback_records=config.data.records_dir,
                tsne_points=config.eval.get("tsne_points", 600), comparison=comparison,
                aggregate=config.eval.get("aggregate", Setup.aggregate),
                subject_score=config.eval.get("subject_score", Setup.subject_score),
                bootstrap=config.eval.get("bootstrap", Setup.bootstrap))
  return run(tasks_lib.resolve(config.eval.tasks, cache_dir=out_dir / "features"), setup)


def parse_encoders(values, checkpoint: str = "") -> list:
  """[(name, path)] from --encoder=name=path items; a bare --encoder=name takes --checkpoint."""
  out = []
  for value in values:
    name, sep, path = value.partition("=")
    if not sep:
      if not checkpoint:
        raise ValueError(f"--encoder={value} needs --checkpoint=EXPORT_DIR (or use --encoder=name=path)")
      path = checkpoint
    out.append((name.strip(), path.strip()))
  names = [n for n, _ in out]
  if len(set(names)) != len(names):
    raise ValueError(f"encoder names must be unique, got {names}")
  return out


def workdir_encoders(workdir) -> list:
  """[(name, export path)] of a training workdir: its init_from export (if any) and its own export."""
  workdir = pathlib.Path(workdir)
  out = []
  config_path = workdir / "config.json"
  config = json.loads(config_path.read_text()) if config_path.is_file() else {}
  init = config.get("init_from")
  if init and any((pathlib.Path(init) / sub / "manifest.json").is_file() for sub in ("", "export")):
    out.append((f"init from {init}", init))
  if (workdir / "export" / "manifest.json").is_file():
    loss = config.get("loss", {})
    aligned = config.get("data", {}).get("teacher_dir") and loss.get("align_weight", 1.0) > 0
    out.append((f"aligned ({loss.get('alignment', '?')})" if aligned else "trained", str(workdir / "export")))
  return out


def _define_flags():
  """CLI flags, defined only when run as a program (importing this module defines none)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("workdir", None, "Results go to WORKDIR/eval; its encoders are used by default.")
  flags.DEFINE_string("tasks", "demo", "Comma-separated tasks, groups or table:DIR:LABEL specs.")
  flags.DEFINE_string("data_root", "", "Folder holding one prepared records folder per task family.")
  flags.DEFINE_multi_string("encoder", [], "name=EXPORT_DIR (repeatable), or a name with --checkpoint.")
  flags.DEFINE_string("checkpoint", "", "Export directory for a bare --encoder=NAME.")
  flags.DEFINE_string("baselines", "logmel,egemaps", "Feature baselines: logmel, egemaps, compare.")
  flags.DEFINE_integer("seeds", 5, "Probe seeds.")
  flags.DEFINE_integer("epochs", 64, "Probe epochs.")
  flags.DEFINE_integer("feature_batch_size", 32, "Chunks per encoder call.")
  flags.DEFINE_integer("tsne_points", 600, "At most this many recordings per t-SNE map (0: no maps).")
  flags.DEFINE_enum("aggregate", Setup.aggregate, scoring.AGGREGATES,
                    "Score recordings, subjects (each subject's recordings as one) or both; auto: both "
                    "where some subject has several recordings in a task, else recording.")
  flags.DEFINE_enum("subject_score", Setup.subject_score, scoring.SUBJECT_SCORES,
                    "A subject's score: the mean or the max of its recordings' class probabilities.")
  flags.DEFINE_integer("bootstrap", Setup.bootstrap,
                       "Subject resamples behind each 95% interval (0: no intervals).")
  flags.DEFINE_string("protocol", Setup.protocol,
                      "official: each task's own split (OPERA's); cv:K: subject-grouped, label-stratified K-fold; "
                      "repeated_cv:K:R: R repetitions of it with other fold seeds. Leave-one-out and per-database "
                      "tasks keep their protocol.")
  flags.DEFINE_list("probes", list(Setup.probes),
                    "opera: OPERA's linear probe (Adam, 64 epochs, best validation epoch); logreg: L2 logistic "
                    "regression with C chosen by inner subject-grouped CV. Several: side by side.")
  flags.DEFINE_multi_string("compare", [], "A:B (repeatable): paired differences A - B per task on the same folds "
                            "and subjects, with a paired-bootstrap 95% interval and p-value.")
  flags.DEFINE_bool("zeroshot", False, "Also run zero-shot classification and retrieval (needs export/heads).")
  flags.mark_flags_as_required(["workdir"])


def _cli_setup(cfg) -> Setup:
  workdir = pathlib.Path(cfg.workdir)
  saved = json.loads((workdir / "config.json").read_text()) if (workdir / "config.json").is_file() else {}
  audio_config = saved.get("audio") or dict(audio.OPERA_LOG_MEL)
  probe_config, _ = _base_probe_config(probe.OPERA_PROTOCOL)
  probe_config["epochs"] = cfg.epochs
  pairs = parse_encoders(cfg.encoder, cfg.checkpoint) if cfg.encoder else workdir_encoders(workdir)
  # Only a workdir's own pair (its init_from export and its aligned export) is "before and after alignment".
  aligned_pair = not cfg.encoder and len(pairs) == 2 and pairs[1][0].startswith("aligned")
  encoders = [from_export(name, path) for name, path in pairs]
  gt_window = audio.num_samples_for_frames(256, audio_config.get("hop", 512))
  names = [n.strip() for n in cfg.baselines.split(",") if n.strip()]
  return Setup(encoders=encoders,
               baselines=baselines.build(names, audio_config, gt_window, batch_size=cfg.feature_batch_size),
               audio_config=audio_config, probe_config=probe_config, seeds=cfg.seeds,
               out_dir=workdir / "eval", feature_batch_size=cfg.feature_batch_size, data_root=cfg.data_root,
               tsne_points=cfg.tsne_points, aggregate=cfg.aggregate, subject_score=cfg.subject_score,
               bootstrap=cfg.bootstrap, comparison="alignment" if aligned_pair else "", protocol=cfg.protocol,
               probes=tuple(cfg.probes), compare=parse_compare(cfg.compare))


def _main(argv):
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cfg = flags.FLAGS
  setup = _cli_setup(cfg)
  task_list = tasks_lib.resolve(cfg.tasks, cache_dir=setup.out_dir / "features")
  if not setup.encoders and not setup.baselines:
    raise app.UsageError("nothing to evaluate: no --encoder, no export in --workdir and no --baselines")
  run(task_list, setup)
  if cfg.zeroshot:
    from acula_jax import zeroshot  # pylint: disable=g-import-not-at-top
    zeroshot.run_cli(cfg.workdir, task_list, setup)


def main():
  from absl import app  # pylint: disable=g-import-not-at-top
  _define_flags()
  app.run(errors.one_line_errors(_main))


if __name__ == "__main__":
  main()
