r"""Turns a dataset as its publisher lays it out into audio records (16 kHz mono ArrayRecord shards).

  python -m acula_jax.data.prepare --dataset=physionet2016 --data_dir=/data/physionet2016 \
      --output=workdir/physionet2016/data/records [--num_shards=4 --seed=0 --workers=2] \
      [--option=split=leave_database_out:e --option=limit=40 | --options=split=random,limit=40] \
      [--chunk_seconds=0]

The adapter (`acula_jax.data.datasets.get_adapter(NAME)`) lists the recordings with their labels, metadata
and split; this module decodes each one with `audio_io.load_audio` (resampled to 16 kHz with soxr_hq),
optionally with `--workers` threads (`--pool=thread`, the default: libsndfile and soxr release the GIL,
so threads scale without start-up cost) or spawned processes (`--pool=process`, for decoders that hold
the GIL, such as audioread's); results keep the adapter's order, so the records do not depend on the
worker count. They are written with `records.write_audio_records`.

Recordings are stored whole: the 8.18 s OPERA windows are cut at feature time. `--chunk_seconds>0`
instead splits each recording into chunks with ids `ID#0`, `ID#1`, ... (a last piece shorter than half
a chunk is dropped unless it is the only one).

Nothing is dropped silently: rows the adapter could not use and recordings that fail to decode
(corrupt, empty, silent, NaN, multi-channel) are listed with their reason in the manifest's `skipped`
list and summarised at the end ("wrote N, skipped M (reasons ...)").

Every example's metadata gains `source_path` (as the adapter gave it, usually relative to --data_dir),
`original_sample_rate` (Hz of the file) and `duration_s` (of the stored audio).
"""

import collections
import concurrent.futures
import dataclasses
import hashlib
import inspect
import multiprocessing
import os
import re
import sys

from absl import app
from absl import flags
import numpy as np
import tqdm

from acula_jax import audio
from acula_jax import errors
from acula_jax.audio import io as audio_io
from acula_jax.data import datasets
from acula_jax.data import records
from acula_jax.data.datasets import common
from acula_jax.errors import DataError

POOLS = ("process", "thread")
# Options every dataset takes (--option=KEY=true), read by the decoder rather than the adapter:
# downmix averages the channels of multi-channel files (else they are skipped); reject_out_of_range
# skips float files whose samples leave [-1, 1] (else they are kept and listed in `warnings`).
DECODE_OPTIONS = ("downmix", "reject_out_of_range")
# Futures in flight per worker: enough to keep workers busy, few enough that decoded audio waiting
# for the (sequential) writer cannot pile up in memory.
_WINDOW_PER_WORKER = 4
_DONE = object()  # End-of-input marker of `ordered_map`.


# ----------------------------------------------------------------------------------------------------
# Options.
# ----------------------------------------------------------------------------------------------------

def parse_options(option_items=(), options_string="") -> dict:
  """Adapter options from repeated `key=value` items and/or one 'k=v,k2=v2' string.

  In the comma form a piece without '=' continues the previous value, so 'label_columns=a,b,seed=1'
  gives {'label_columns': 'a,b', 'seed': '1'}. Values stay strings here; `coerce_option` converts them
  to the types of the adapter's defaults.
  """
  pieces = list(option_items or ())
  merged = []
  for piece in filter(None, (options_string or "").split(",")):
    if "=" not in piece and merged:
      merged[-1] += "," + piece
    else:
      merged.append(piece)
  out = {}
  for item in pieces + merged:
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key:
      raise ValueError(f"adapter option {item!r} is not key=value")
    if key in out:
      raise ValueError(f"adapter option {key!r} given twice")
    out[key] = value.strip()
  return out


def coerce_option(value, default):
  """A command-line string as the type of the parameter's default (bool, int, float, tuple of those).

  Defaults of None or str keep the string (the adapter converts it); non-strings pass unchanged, so
  Python callers can give native values.
  """
  if not isinstance(value, str) or default is None or default is inspect.Parameter.empty:
    return value
  if isinstance(default, bool):
    text = value.strip().lower()
    if text not in ("1", "true", "yes", "0", "false", "no"):
      raise ValueError(f"option value {value!r} is not a boolean (true/false)")
    return text in ("1", "true", "yes")
  if isinstance(default, (int, float)):
    return type(default)(value)
  if isinstance(default, (tuple, list)) and default and isinstance(default[0], (int, float)):
    return tuple(type(default[0])(v) for v in value.split(","))
  return value


def call_adapter(adapter, data_dir, options: dict, seed: int):
  """Runs `adapter.list_examples` with the options it accepts; a clear error naming unknown ones."""
  params = inspect.signature(adapter.list_examples).parameters
  open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
  named = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
  known = sorted(name for name, p in params.items() if p.kind in named and name != "data_dir")
  unknown = sorted(set(options) - set(known))
  if unknown and not open_ended:
    raise ValueError(f"dataset {adapter.NAME!r} has no option(s) {unknown}; known: {known}")
  kwargs = {}
  for key, value in options.items():
    try:
      kwargs[key] = coerce_option(value, params[key].default) if key in params else value
    except ValueError as e:
      raise ValueError(f"dataset {adapter.NAME!r} option {key}={value!r}: {e}") from e
  # The global --seed reaches adapters that split with a seed, unless an option overrides it.
  if "seed" not in kwargs and ("seed" in params or open_ended):
    kwargs["seed"] = seed
  return adapter.list_examples(data_dir, **kwargs)


# ----------------------------------------------------------------------------------------------------
# Decoding (runs in the worker pool): one task = one audio file.
# ----------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class _Task:
  """Consecutive specs of one audio file, decoded once for all of them.

  Per-cycle datasets list many segments of a file in a row.
  """
  specs: list               # common.ExampleSpec, all with the same path
  file: str                 # absolute path of the audio file
  chunk_seconds: float
  downmix: bool = False
  reject_out_of_range: bool = False


@dataclasses.dataclass
class _Result:
  examples: list            # audio-record dicts
  skipped: list             # {"id", "path", "reason"} dicts
  warnings: list = dataclasses.field(default_factory=list)  # {"kind", "path", "detail"} dicts


def make_tasks(specs, data_dir, chunk_seconds=0.0, **decode_options) -> list[_Task]:
  """Groups runs of consecutive specs that share a file, keeping the adapter's order."""
  tasks = []
  for spec in specs:
    if tasks and tasks[-1].specs[0].path == spec.path:
      tasks[-1].specs.append(spec)
    else:
      tasks.append(_Task([spec], os.path.join(os.fspath(data_dir), spec.path), float(chunk_seconds),
                         **decode_options))
  return tasks


def _segment(wave, spec: common.ExampleSpec):
  """The [start_s, end_s) part of a 16 kHz waveform; DataError when it lies outside the recording."""
  if not spec.start_s and spec.end_s is None:
    return wave
  sr = audio.SAMPLE_RATE
  start = int(round(spec.start_s * sr))
  end = wave.size if spec.end_s is None else int(round(spec.end_s * sr))
  if start < 0 or end <= start or start >= wave.size:
    raise DataError(spec.id, f"segment [{spec.start_s}, {spec.end_s}) s is empty or outside the "
                             f"{wave.size / sr:.2f} s recording")
  return audio_io.check_waveform(wave[start:min(end, wave.size)], spec.id)


def _chunks(wave, chunk_seconds: float):
  """Consecutive pieces of `chunk_seconds`; a short tail (< half a chunk) goes unless it is all there is."""
  size = int(round(chunk_seconds * audio.SAMPLE_RATE))
  pieces = [wave[i:i + size] for i in range(0, wave.size, size)]
  if len(pieces) > 1 and pieces[-1].size < size / 2:
    pieces.pop()
  return pieces


def load_task(task: _Task) -> _Result:
  """Decodes a task's file once and cuts its examples; bad audio becomes skipped entries."""
  result = _Result([], [])
  path = task.specs[0].path
  try:
    wave, notes = audio_io.decode_audio(task.file, audio.SAMPLE_RATE, downmix=task.downmix)
    if notes.peak > 1.0 and task.reject_out_of_range:
      raise DataError(task.file, f"samples outside [-1, 1] (peak {notes.peak:.3g}); "
                                 "without --option=reject_out_of_range=true it is kept and counted")
  except DataError as e:
    result.skipped += [{"id": spec.id, "path": spec.path, "reason": e.reason} for spec in task.specs]
    return result
  if notes.truncated:
    declared, present = notes.truncated
    result.warnings.append({"kind": "truncated", "path": path,
                            "detail": f"header says {declared:.2f} s, {present:.2f} s present; kept"})
  if notes.peak > 1.0:
    result.warnings.append({"kind": "out_of_range", "path": path,
                            "detail": f"peak {notes.peak:.3g} outside [-1, 1]; kept as is"})
  if notes.channels > 1:
    result.warnings.append({"kind": "downmixed", "path": path, "detail": f"{notes.channels} channels averaged"})
  rate = notes.sample_rate
  for spec in task.specs:
    try:
      _add_examples(result, spec, _segment(wave, spec), rate, task.chunk_seconds)
    except DataError as e:
      result.skipped.append({"id": spec.id, "path": spec.path, "reason": e.reason})
  return result


def _add_examples(result: _Result, spec, wave, rate, chunk_seconds):
  """Appends the example of one spec (or its chunks) to `result`."""
  metadata = {**spec.metadata, "source_path": spec.path, "original_sample_rate": rate}
  if spec.start_s or spec.end_s is not None:
    metadata.update(segment_start_s=spec.start_s, segment_end_s=spec.end_s)
  base = dict(dataset="", subject_id=spec.subject_id or spec.id, split=spec.split,
              sample_rate=audio.SAMPLE_RATE, labels=dict(spec.labels))
  if chunk_seconds <= 0:
    result.examples.append(_example(base, spec.id, wave, metadata))
    return
  for k, piece in enumerate(_chunks(wave, chunk_seconds)):
    chunk_id = f"{spec.id}#{k}"
    try:
      piece = audio_io.check_waveform(piece, chunk_id)  # A silent stretch fails here, not the recording.
    except DataError as e:
      result.skipped.append({"id": chunk_id, "path": spec.path, "reason": e.reason})
      continue
    # `*_id` / `*_number` keys are bookkeeping that reports never state.
    chunk_meta = {**metadata, "recording_id": spec.id, "chunk_number": k}
    result.examples.append(_example(base, chunk_id, piece, chunk_meta))


def _example(base: dict, example_id: str, wave, metadata: dict) -> dict:
  wave = np.ascontiguousarray(wave, dtype=np.float32)
  metadata = {**metadata, "duration_s": round(wave.size / audio.SAMPLE_RATE, 4)}
  return {**base, "id": example_id, "audio": wave, "num_samples": wave.size, "metadata": metadata}


# ----------------------------------------------------------------------------------------------------
# Ordered parallel map with a bounded window.
# ----------------------------------------------------------------------------------------------------

def _make_executor(pool: str, workers: int):
  if pool == "thread":
    return concurrent.futures.ThreadPoolExecutor(max_workers=workers)
  if pool == "process":
    # spawn, not fork: the parent has imported JAX/grain (threads), and forking a threaded process can
    # deadlock. Each worker pays the imports of JAX and librosa (seconds), and every waveform is pickled
    # back to the parent, so on PhysioNet this is slower than threads; it helps GIL-bound decoders.
    return concurrent.futures.ProcessPoolExecutor(max_workers=workers,
                                                  mp_context=multiprocessing.get_context("spawn"))
  raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")


def ordered_map(fn, items, *, workers: int = 1, pool: str = "thread"):
  """Yields fn(item) in input order; with workers > 1 a pool computes a bounded window ahead."""
  if workers <= 1:
    yield from map(fn, items)
    return
  executor = _make_executor(pool, workers)
  try:
    items = iter(items)
    pending = collections.deque()
    for item in items:
      pending.append(executor.submit(fn, item))
      if len(pending) >= workers * _WINDOW_PER_WORKER:
        break
    while pending:
      result = pending.popleft().result()
      nxt = next(items, _DONE)
      if nxt is not _DONE:
        pending.append(executor.submit(fn, nxt))
      yield result
  finally:
    executor.shutdown(wait=True, cancel_futures=True)


# ----------------------------------------------------------------------------------------------------
# The job.
# ----------------------------------------------------------------------------------------------------

def check_unique_ids(specs, dataset: str) -> None:
  """DataError naming the first id that two specs share (before any audio is decoded)."""
  first = {}
  for spec in specs:
    if spec.id in first:
      raise DataError(spec.id, f"duplicate example id in dataset {dataset!r} "
                               f"({first[spec.id]} and {spec.path})")
    first[spec.id] = spec.path


def skipped_entry(item) -> dict:
  if isinstance(item, common.Skipped):
    return {"path": item.where, "reason": item.reason}
  return dict(item)


def write_examples(specs, output, *, dataset: str, data_dir, skipped=(), num_shards=4,
                   chunk_seconds=0.0, workers=1, pool="thread", progress=True, downmix=False,
                   reject_out_of_range=False, inputs=None) -> dict:
  """Decodes `specs` and writes them as audio records in `output`; returns the manifest.

  `skipped` holds the adapter's own skipped rows; decoding failures are added to them. Files kept
  with a warning (a truncated WAV, samples outside [-1, 1]) are listed in the manifest's `warnings`.
  """
  # Imported here, not at the top: spawned decoding workers import this module, and the record stack
  # (grain, array_record) would add seconds to each worker's start.
  check_unique_ids(specs, dataset)
  data_dir = os.fspath(data_dir)
  skipped = [skipped_entry(s) for s in skipped]
  tasks = make_tasks(specs, data_dir, chunk_seconds, downmix=downmix,
                     reject_out_of_range=reject_out_of_range)
  warnings = []
  bar = None
  if progress:
    bar = tqdm.tqdm(total=len(specs), desc=f"prepare {dataset}", unit="rec")

  def examples():
    for task, result in zip(tasks, ordered_map(load_task, tasks, workers=workers, pool=pool)):
      skipped.extend(result.skipped)  # Read by write_audio_records after the last example.
      warnings.extend(result.warnings)
      if bar is not None:
        bar.update(len(task.specs))
      for ex in result.examples:
        yield {**ex, "dataset": dataset}

  try:
    return records.write_audio_records(output, examples(), dataset=dataset, num_shards=num_shards,
                                       skipped=skipped, warnings=warnings, inputs=inputs)
  finally:
    if bar is not None:
      bar.close()


def inputs_fingerprint(dataset, data_dir, specs, options, *, seed, num_shards, chunk_seconds) -> dict:
  """What shaped a prepared dataset: the adapter's options and every source file's size and mtime."""
  paths = sorted({spec.path for spec in specs})
  digest = hashlib.sha256()
  for path in paths:
    info = os.stat(os.path.join(data_dir, path))
    digest.update(f"{path}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
  return {"dataset": dataset, "data_dir": os.path.abspath(data_dir),
          "options": {k: str(v) for k, v in sorted(options.items())}, "seed": int(seed),
          "num_shards": int(num_shards), "chunk_seconds": float(chunk_seconds),
          "files": len(paths), "files_sha256": digest.hexdigest()}


def prepare(dataset: str, data_dir, output, *, options=None, num_shards=4, seed=0, chunk_seconds=0.0,
            workers=1, pool="thread", progress=True, overwrite=False) -> dict:
  """Lists `dataset` in `data_dir` with its adapter, decodes it and writes records to `output`.

  A folder that already holds a dataset is left as it is when it was prepared from the same files with
  the same options ("up to date"); a different one is replaced only with `overwrite` (else UsageError).
  """
  data_dir = os.fspath(data_dir)
  if not os.path.isdir(data_dir):
    raise DataError(data_dir, "data directory does not exist")
  adapter = datasets.get_adapter(dataset)
  all_options = dict(options or {})
  options = dict(all_options)
  decode_options = {key: coerce_option(options.pop(key), False) for key in DECODE_OPTIONS if key in options}
  specs, skipped = call_adapter(adapter, data_dir, options, seed)
  if not specs:
    raise DataError(data_dir, f"the {dataset} adapter found no usable recordings "
                              f"({len(skipped)} skipped: {summarize_skipped(skipped)})")
  inputs = inputs_fingerprint(dataset, data_dir, specs, all_options, seed=seed, num_shards=num_shards,
                              chunk_seconds=chunk_seconds)
  previous = _existing_manifest(output)
  if previous is not None:
    if previous.get("inputs") == inputs:
      previous["up_to_date"] = True
      return previous
    if not overwrite:
      raise errors.UsageError(
          f"{output} already holds a {previous.get('dataset', '')} dataset prepared from other inputs or "
          "options; pass --overwrite to replace it, or choose another --output")
  return write_examples(specs, output, dataset=dataset, data_dir=data_dir, skipped=skipped,
                        num_shards=num_shards, chunk_seconds=chunk_seconds, workers=workers, pool=pool,
                        progress=progress, inputs=inputs, **decode_options)


def _existing_manifest(output):
  if not os.path.isfile(os.path.join(os.fspath(output), records.MANIFEST)):
    return None
  try:
    return records.read_manifest(output)
  except (DataError, OSError):
    return {}  # unreadable: a dataset is there, of unknown inputs


def _reason_kind(reason: str) -> str:
  """The gist of a reason, without per-file details: 'silent (peak ...)' -> 'silent'."""
  return re.split(r"[(;:]", str(reason), maxsplit=1)[0].strip() or str(reason)


def summarize_skipped(skipped) -> str:
  """'2 x audio file not found, 1 x silent' (most frequent first), or 'none'."""
  counts = collections.Counter(_reason_kind(skipped_entry(s)["reason"]) for s in skipped)
  return ", ".join(f"{n} x {kind}" for kind, n in counts.most_common()) or "none"


MIN_SUBJECTS_PER_SPLIT = 10  # fewer makes a split's AUROC swing by more than the effects we measure


def split_warnings(manifest: dict) -> list[str]:
  """Splits that are empty, hold fewer than MIN_SUBJECTS_PER_SPLIT subjects, or lack a class."""
  out = []
  subjects = manifest.get("subject_counts", {})
  for split in ("train", "valid", "test"):
    if split not in manifest["counts"]:
      out.append(f"split {split!r} is empty: evaluation needs train and test (give a split column, "
                 "or more subjects)")
  for split, n in subjects.items():
    if n < MIN_SUBJECTS_PER_SPLIT:
      out.append(f"split {split!r} has only {n} subject(s): its scores will be noisy")
  counts = manifest.get("label_counts", {})
  for key in manifest.get("label_keys", []):
    classes = {v for split in counts.values() for v in split.get(key, {})}
    if len(classes) > 20:  # a continuous label (regression): classes do not apply
      continue
    for split in counts:
      missing = sorted(classes - set(counts[split].get(key, {})))
      if missing:
        out.append(f"split {split!r} has no example of {key}={', '.join(missing)}")
  return out


def _rate_lines(rates: dict) -> list:
  """A note on the files' own sample rates when they differ or some are below the records' rate."""
  low = [int(r) for r in rates if int(r) < audio.SAMPLE_RATE]
  if len(rates) < 2 and not low:
    return []
  listed = ", ".join(f"{r} Hz x {n}" for r, n in sorted(rates.items(), key=lambda item: -item[1]))
  line = f"source sample rates: {listed}; all stored at {audio.SAMPLE_RATE} Hz"
  if low:
    line += (f" (a file holds nothing above half its rate: the {min(low)} Hz one(s) nothing above "
             f"{min(low) // 2} Hz)")
  return [line]


def summary(manifest: dict, output) -> str:
  splits = ", ".join(f"{name} {n}" for name, n in manifest["counts"].items())
  subjects = ", ".join(f"{name} {n}" for name, n in manifest.get("subject_counts", {}).items())
  skipped = manifest["skipped"]
  manifest_path = os.path.join(os.fspath(output), "manifest.json")
  lines = [f"wrote {manifest['num_examples']} recordings ({splits}; subjects: {subjects}) to {output}, "
           f"skipped {len(skipped)}" + (f" (reasons: {summarize_skipped(skipped)})" if skipped else "")]
  for entry in skipped[:5]:
    entry = skipped_entry(entry)
    lines.append(f"  skipped {entry.get('path') or entry.get('id')}: {entry['reason']}")
  if len(skipped) > 5:
    lines.append(f"  ... {len(skipped) - 5} more")
  if skipped:
    lines.append(f"  (every skipped file and its reason: 'skipped' in {manifest_path})")
  label_keys = manifest.get("label_keys", [])
  lines.append(f"labels: {', '.join(label_keys)}" if label_keys else
               "labels: none (a table dataset takes its label columns from --option=label_columns=a,b; "
               "every other column became metadata)")
  lines.append(f"metadata: {', '.join(manifest.get('metadata_keys', [])) or 'none'}")
  lines += [f"warning: {w}" for w in split_warnings(manifest)]
  lines += _rate_lines(manifest.get("source_sample_rates", {}))
  for kind, text in (("downmixed", "multi-channel file(s) averaged to mono (--option=downmix=true)"),
                     ("truncated", "truncated file(s) kept (data shorter than the header says)"),
                     ("out_of_range", "file(s) with samples outside [-1, 1] kept (reject them with "
                                      "--option=reject_out_of_range=true)")):
    listed = [w for w in manifest.get("warnings", []) if w["kind"] == kind]
    if listed:
      lines.append(f"warning: {len(listed)} {text}: " + "; ".join(
          f"{w['path']} ({w['detail']})" for w in listed[:3]) + (" ..." if len(listed) > 3 else "")
          + f" (all in {os.path.join(os.fspath(output), 'manifest.json')})")
  return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# CLI.
# ----------------------------------------------------------------------------------------------------

def _define_flags():
  """CLI flags, defined only when run as a script so that importing this module defines none."""
  flags.DEFINE_string("dataset", None, f"Adapter name: {', '.join(sorted(datasets.ADAPTERS))}.")
  flags.DEFINE_string("data_dir", None, "The dataset's root folder, laid out as published.")
  flags.DEFINE_string("output", None, "Output directory for the ArrayRecord shards + manifest.json.")
  flags.DEFINE_integer("num_shards", 4, "Shards per split (fewer when a split is smaller).")
  flags.DEFINE_integer("seed", 0, "Split seed, passed to adapters that split with one.")
  flags.DEFINE_float("chunk_seconds", 0.0, "> 0: store chunks of this length (ids ID#k), not whole files.")
  flags.DEFINE_integer("workers", 1, "Decoding workers (1 = in this process).")
  flags.DEFINE_enum("pool", "thread", POOLS, "Worker pool kind when --workers > 1.")
  flags.DEFINE_multi_string("option", [], "Adapter option key=value (repeatable), e.g. split=random.")
  flags.DEFINE_string("options", "", "Adapter options as one string: k=v,k2=v2.")
  flags.DEFINE_bool("overwrite", False, "Replace a dataset in --output prepared from other inputs.")
  flags.mark_flags_as_required(["dataset", "data_dir", "output"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cfg = flags.FLAGS
  manifest = prepare(cfg.dataset, cfg.data_dir, cfg.output,
                     options=parse_options(cfg.option, cfg.options), num_shards=cfg.num_shards,
                     seed=cfg.seed, chunk_seconds=cfg.chunk_seconds, workers=cfg.workers, pool=cfg.pool,
                     overwrite=cfg.overwrite)
  if manifest.get("up_to_date"):
    print(f"{cfg.output} is up to date (prepared from the same files with the same options); nothing "
          "rewritten")
  print(summary(manifest, cfg.output))
  sys.stdout.flush()


if __name__ == "__main__":
  errors.run_program(main, _define_flags)
