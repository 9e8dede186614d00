r"""TensorFlow-Datasets builders for the dataset adapters (optional: `pip install acula_jax[tfds]`).

Each adapter of `acula_jax.data.datasets` can be built as a TFDS `GeneratorBasedBuilder` that reads the
dataset from a manual directory (laid out as its publisher ships it) and writes ArrayRecord shards, so
the result is read without TensorFlow through `tfds.data_source` and Grain:

  python -m acula_jax.data.tfds_builders --dataset=yaseen2018 --manual_dir=/data/yaseen2018 \
      --data_dir=~/tensorflow_datasets [--option=limit=40 ...] [--config=NAME] [--workers=2]
  # in Python: tfds_builders.build("yaseen2018", manual_dir, data_dir, options={"limit": 40})

  import grain, tensorflow_datasets as tfds
  from acula_jax.data import tfds_builders
  source = tfds.data_source("yaseen2018", split="train", data_dir="~/tensorflow_datasets")
  # a config other than `default`: tfds.data_source("yaseen2018/limit-40", ...)
  dataset = grain.MapDataset.source(source).map(tfds_builders.to_record)  # the audio-record dicts

Building and reading need no TensorFlow (checked with tensorflow-datasets 4.9.10: it serialises and
parses examples with its own protobuf copy when TF is absent). What does need TF: the `tfds build`
CLI (it imports TF at start-up), `tfds.features.Audio` (hence the Tensor feature below) and
`builder.as_dataset()` (tf.data); use this module's CLI and `tfds.data_source`. `import acula_jax`
and training never import this module, so TFDS stays an optional extra.

The examples are those `acula_jax.data.prepare` writes: the adapter lists the recordings (options as in
`prepare --option=k=v`, given through a `BuilderConfig`), every file is decoded with
`acula_jax.audio.io.load_audio` at 16 kHz, and the features follow the audio-record schema: `id`, `dataset`,
`subject_id`, `split` (text), `audio` (a float32 [num_samples] Tensor feature, 16 kHz;
`tfds.features.Audio` would need TensorFlow), `sample_rate`, `num_samples`,
`labels` and `metadata` (JSON text, keys sorted). TFDS splits are the adapter's `split` field; a split
without examples is left out. Records keep the adapter's order (sorted ids), not TFDS's hashed order.

Nothing is dropped silently: rows the adapter could not use and recordings that fail to decode are
logged one by one (absl WARNING), summarised at the end ("yaseen2018: wrote N ..., skipped M (reasons
...)"), and listed in the dataset folder's `metadata.json` (`builder.info.metadata["skipped"]`).

Builders: `Physionet2016`, `Yaseen2018` and `HlsCmds` are defined here; `builder_class(NAME)` makes
(and registers with TFDS, once) the builder of any registered adapter. Configs: `default` (the
adapter's defaults) plus, for PhysioNet 2016, `leave_database_out-X` / `within_database-X` and for
HLS-CMDS `part-HS` / `part-LS` / `part-Mix`; any other option set is `builder_cls.config_for(...)`.
"""
import abc
import collections
import json
import os
import re
import sys

import numpy as np

try:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
except ImportError as _error:  # pragma: no cover - depends on the environment
  raise ImportError(
      "acula_jax.data.tfds_builders needs tensorflow-datasets, which is an optional extra: "
      "pip install 'acula_jax[tfds]' (TensorFlow itself is not needed)") from _error

from absl import logging
from absl import flags
from absl import app

from acula_jax import fileio
from acula_jax import audio
from acula_jax.data import datasets
from acula_jax import errors
from acula_jax.data import prepare
from acula_jax.data import records
from acula_jax.errors import DataError

VERSION_STR = "1.0.0"
FILE_FORMAT = "array_record"
DEFAULT_CONFIG = "default"
_CONFIG_NAME_BAD = re.compile(r"[^\w+.\-]")

# Adapter name -> TFDS class name, homepage, citation and instructions for the three datasets that the
# project tests on real data; other adapters get their instructions from their module docstring.
_KNOWN = {
    "physionet2016": dict(
        class_name="Physionet2016",
        homepage="https://physionet.org/content/challenge-2016/",
        citation="Liu C. et al. An open access database for the evaluation of heart sound algorithms. "
                 "Physiol. Meas. 37(12):2181-2213, 2016.",
        instructions="""\
        Download the PhysioNet/CinC Challenge 2016 training set from
        https://physionet.org/content/challenge-2016/ (Open Data Commons Attribution 1.0) and unpack it
        unchanged. The manual directory is the folder that holds the training-{a..f} folders:

          MANUAL_DIR/training-a/a0001.wav ...      2 kHz PCG recordings
          MANUAL_DIR/training-a/REFERENCE.csv      id,-1|1  (-1 normal, 1 abnormal)
          MANUAL_DIR/training-a/REFERENCE-SQI.csv  id,-1|1,0|1  (optional: signal quality)
          ... training-b ... training-f

        The .hea headers are not needed. Configs choose the split protocol (default: random, seeded;
        leave_database_out-X, within_database-X); never report the random split alone.
        """),
    "yaseen2018": dict(
        class_name="Yaseen2018",
        homepage="https://doi.org/10.3390/app8122344",
        citation="Yaseen, Son G.-Y., Kwon S. Classification of Heart Sound Signal Using Multiple "
                 "Features. Applied Sciences 8(12):2344, 2018.",
        instructions="""\
        Download the heart-sound recordings that Yaseen, Son & Kwon published with their paper
        (Applied Sciences 2018, 8(12):2344; one archive per class) and unpack them so that each class
        is one folder of .wav files:

          MANUAL_DIR/N/*.wav  MANUAL_DIR/MR/*.wav  MANUAL_DIR/MS/*.wav  MANUAL_DIR/MVP/*.wav
          MANUAL_DIR/AS/*.wav (optional)

        The folder name is the label (valve_class). Other files are skipped and counted.
        """),
    "hls_cmds": dict(
        class_name="HlsCmds",
        homepage="https://doi.org/10.17632/8972jxbpmp.1",
        citation="HLS-CMDS: Heart and Lung Sounds Dataset Recorded from a Clinical Manikin using "
                 "Digital Stethoscope. Mendeley Data, doi:10.17632/8972jxbpmp.1.",
        instructions="""\
        Download HLS-CMDS from Mendeley Data (doi:10.17632/8972jxbpmp.1; check the record for its
        license) and unpack it unchanged:

          MANUAL_DIR/HS/*.wav   + MANUAL_DIR/HS.csv    heart sounds
          MANUAL_DIR/LS/*.wav   + MANUAL_DIR/LS.csv    lung sounds
          MANUAL_DIR/Mix/*.wav  + MANUAL_DIR/Mix.csv   mixtures (M*.wav)

        Configs part-HS, part-LS and part-Mix build one part; default builds all three.
        """),
}


def _predefined_options(adapter_name: str) -> dict:
  """Config name -> adapter options of the named configs besides `default`."""
  if adapter_name == "physionet2016":
    from acula_jax.data.datasets import physionet2016  # pylint: disable=g-import-not-at-top
    out = {}
    for protocol in ("leave_database_out", "within_database"):
      for letter in physionet2016.DATABASES:
        out[f"{protocol}-{letter}"] = {"split": f"{protocol}:{letter}"}
    return out
  if adapter_name == "hls_cmds":
    return {f"part-{part}": {"part": part} for part in ("HS", "LS", "Mix")}
  return {}


# ----------------------------------------------------------------------------------------------------
# Configs.
# ----------------------------------------------------------------------------------------------------

class AdapterConfig(tfds.core.BuilderConfig):
  """A builder config: adapter options (as `prepare --option`) and prepare's `chunk_seconds`."""

  def __init__(self, *, name, options=None, chunk_seconds=0.0, seed=0, description=None, **kwargs):
    self.options = dict(options or {})
    self.chunk_seconds = float(chunk_seconds)
    self.seed = int(seed)
    settings = json.dumps({"options": self.options, "chunk_seconds": self.chunk_seconds,
                           "seed": self.seed}, sort_keys=True, default=str)
    super().__init__(name=name, description=description or f"acula_jax adapter settings {settings}",
                     **kwargs)

  def key(self):
    return (tuple(sorted((k, str(v)) for k, v in self.options.items())), self.chunk_seconds, self.seed)


def config_name(options=None, chunk_seconds=0.0, seed=0) -> str:
  """A TFDS-safe config name for a set of options: {'split': 'leave_database_out:e', 'limit': 40} ->
  'limit-40.split-leave_database_out-e' (`default` when everything is default)."""
  parts = [f"{k}-{v}" for k, v in sorted((options or {}).items())]
  if float(chunk_seconds):
    parts.append(f"chunk_seconds-{float(chunk_seconds):g}")
  if int(seed):
    parts.append(f"seed-{int(seed)}")
  return _CONFIG_NAME_BAD.sub("-", ".".join(parts)) or DEFAULT_CONFIG


# ----------------------------------------------------------------------------------------------------
# The builder.
# ----------------------------------------------------------------------------------------------------

def _dumps(value) -> str:
  return json.dumps(value, sort_keys=True, default=fileio.json_default)


def _skipped_dict(item) -> dict:
  return {k: str(v) for k, v in prepare.skipped_entry(item).items()}


class AdapterBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A TFDS builder around one `acula_jax.data.datasets` adapter (subclassed once per adapter)."""

  VERSION = tfds.core.Version(VERSION_STR)
  RELEASE_NOTES = {VERSION_STR: "Audio records (16 kHz float32) as written by acula_jax.data.prepare."}
  ADAPTER = None        # adapter name, set by `builder_class`
  HOMEPAGE = None
  CITATION = None

  @classmethod
  @abc.abstractmethod
  def adapter_name(cls) -> str:
    """The registry name of the adapter (keeps this base class abstract and unregistered)."""

  def __init__(self, *, file_format=None, workers: int = 1, **kwargs):
    """As `tfds.core.GeneratorBasedBuilder`; file_format defaults to array_record for new datasets,
    `workers` decoding threads (results keep the adapter's order)."""
    self._workers = max(1, int(workers))
    super().__init__(file_format=file_format, **kwargs)
    if file_format is None and not self.info.initialized:  # Not restored from an existing dataset.
      self.info.set_file_format(FILE_FORMAT, override=True)
    self._listing = None
    self.skipped = []

  @classmethod
  def config_for(cls, *, chunk_seconds=0.0, seed=0, **options) -> AdapterConfig:
    """The config of these adapter options: a predefined one when it matches, else a new one named by
    `config_name` (give it as `config=` to the builder; read it back as 'NAME/CONFIG_NAME')."""
    wanted = AdapterConfig(name=config_name(options, chunk_seconds, seed), options=options,
                           chunk_seconds=chunk_seconds, seed=seed)
    for config in cls.BUILDER_CONFIGS:
      if config.key() == wanted.key() or config.name == wanted.name:
        if config.key() != wanted.key():
          raise ValueError(f"config name {wanted.name!r} is taken by options {config.options}")
        return config
    return wanted

  def _info(self):
    adapter = datasets.get_adapter(self.adapter_name())
    doc = (adapter.__doc__ or "").strip()
    return tfds.core.DatasetInfo(
        builder=self,
        description=doc.splitlines()[0] if doc else self.adapter_name(),
        features=tfds.features.FeaturesDict({
            "id": tfds.features.Text(),
            "dataset": tfds.features.Text(),
            "subject_id": tfds.features.Text(),
            "split": tfds.features.Text(),
            # A Tensor, not tfds.features.Audio: Audio's constructor needs TensorFlow (tfds 4.9.10
            # builds a tf dtype from its numpy dtype), and the samples are stored raw either way.
            "audio": tfds.features.Tensor(
                shape=(None,), dtype=np.float32,
                doc=f"mono waveform, float32, {audio.SAMPLE_RATE} Hz (sample_rate)"),
            "sample_rate": tfds.features.Tensor(shape=(), dtype=np.int32),
            "num_samples": tfds.features.Tensor(shape=(), dtype=np.int64),
            "labels": tfds.features.Text(doc="JSON object: label name -> value (adapter LABEL_MAPS)"),
            "metadata": tfds.features.Text(doc="JSON object: every other published field"),
        }),
        homepage=self.HOMEPAGE,
        citation=self.CITATION,
        metadata=tfds.core.MetadataDict(),
        disable_shuffling=True,  # Records keep the adapter's (sorted-id) order.
    )

  # -- generation ------------------------------------------------------------------------------------

  def _split_generators(self, dl_manager):
    data_dir = os.fspath(dl_manager.manual_dir)
    config = self.builder_config
    adapter = datasets.get_adapter(self.adapter_name())
    specs, skipped = prepare.call_adapter(
        adapter, data_dir, dict(config.options), config.seed)
    if not specs:
      raise DataError(data_dir, f"the {self.adapter_name()} adapter found no usable recordings "
                                f"({len(skipped)} skipped: {prepare.summarize_skipped(skipped)})")
    prepare.check_unique_ids(specs, self.adapter_name())
    self.skipped = [_skipped_dict(s) for s in skipped]
    for entry in self.skipped:
      logging.warning("%s: skipped %s: %s", self.adapter_name(), entry.get("id", entry.get("path")),
                      entry["reason"])
    by_split = collections.defaultdict(list)
    for spec in specs:
      by_split[spec.split].append(spec)
    self._listing = {"data_dir": data_dir, "remaining": set(by_split), "written": {}}
    # TFDS refuses empty splits, and a split with no recordings is not a split of this dataset.
    return {split: self._generate_examples(split, by_split[split], data_dir)
            for split in sorted(by_split)}

  def _generate_examples(self, split, specs, data_dir):
    tasks = prepare.make_tasks(specs, data_dir, self.builder_config.chunk_seconds)
    results = prepare.ordered_map(prepare.load_task, tasks, workers=self._workers)
    key = 0
    for result in results:
      for entry in result.skipped:
        entry = _skipped_dict(entry)
        self.skipped.append(entry)
        logging.warning("%s: skipped %s: %s", self.adapter_name(), entry.get("id", entry.get("path")),
                        entry["reason"])
      for ex in result.examples:
        ex = records.validate_audio_example({**ex, "dataset": self.adapter_name()})
        yield key, {
            "id": ex["id"], "dataset": ex["dataset"], "subject_id": ex["subject_id"],
            "split": ex["split"], "audio": ex["audio"], "sample_rate": ex["sample_rate"],
            "num_samples": ex["num_samples"], "labels": _dumps(ex["labels"]),
            "metadata": _dumps(ex["metadata"]),
        }
        key += 1
    if key == 0:  # TFDS would only say "0 examples for split ...".
      reasons = prepare.summarize_skipped([e for e in self.skipped if e.get("id") in {s.id for s in specs}])
      raise DataError(data_dir, f"{self.adapter_name()}: none of the {len(specs)} recordings of split "
                                f"{split!r} could be decoded ({reasons})")
    self._split_done(split, key)

  def _split_done(self, split, count):
    listing = self._listing
    listing["written"][split] = count
    listing["remaining"].discard(split)
    if listing["remaining"]:
      return
    total = sum(listing["written"].values())
    counts = ", ".join(f"{s} {n}" for s, n in sorted(listing["written"].items()))
    message = (f"{self.adapter_name()}: wrote {total} ({counts}), skipped {len(self.skipped)}"
               + (f" (reasons: {prepare.summarize_skipped(self.skipped)})" if self.skipped else ""))
    (logging.warning if self.skipped else logging.info)(message)
    # Written to metadata.json beside dataset_info.json once the splits are finished.
    self.info.metadata.update({
        "adapter": self.adapter_name(), "options": {k: str(v) for k, v in
                                                    self.builder_config.options.items()},
        "seed": self.builder_config.seed, "chunk_seconds": self.builder_config.chunk_seconds,
        "counts": dict(listing["written"]), "skipped": list(self.skipped),
        "sample_rate": audio.SAMPLE_RATE,
    })


# ----------------------------------------------------------------------------------------------------
# One builder class per adapter.
# ----------------------------------------------------------------------------------------------------

_CLASSES = {}


def _camel(name: str) -> str:
  return "".join(piece[:1].upper() + piece[1:] for piece in re.split(r"[_\W]+", name) if piece)


def _registered(adapter_name: str):
  """Our builder class already registered with TFDS under `adapter_name`, else None; a ValueError
  when another dataset of TFDS's has that name."""
  try:
    cls = tfds.builder_cls(adapter_name)
  except Exception:  # pylint: disable=broad-except  (DatasetNotFoundError and friends)
    return None
  if getattr(cls, "ADAPTER", None) != adapter_name:
    raise ValueError(f"TFDS already has a dataset named {adapter_name!r} ({cls}); cannot register the "
                     f"acula_jax adapter under that name")
  return cls


def builder_class(adapter_name: str) -> type:
  """The TFDS builder class of a registered adapter, made and registered (as `adapter_name`) once."""
  if adapter_name in _CLASSES:
    return _CLASSES[adapter_name]
  existing = _registered(adapter_name)
  if existing is not None:  # This file ran twice (`python -m` + an import): TFDS keeps the first.
    _CLASSES[adapter_name] = existing
    return existing
  adapter = datasets.get_adapter(adapter_name)  # ValueError listing the adapters when unknown.
  known = _KNOWN.get(adapter_name, {})
  instructions = known.get("instructions") or (
      f"Put the {adapter_name} dataset in the manual directory exactly as its publisher lays it out "
      f"(the folder you would pass to `python -m acula_jax.data.prepare --dataset={adapter_name} "
      f"--data_dir=...`). The adapter's documentation:\n\n{(adapter.__doc__ or '').strip()}\n")
  configs = [AdapterConfig(name=DEFAULT_CONFIG)]
  configs += [AdapterConfig(name=name, options=options)
              for name, options in _predefined_options(adapter_name).items()]
  namespace = {
      "name": adapter_name,
      "__module__": "acula_jax.data.tfds_builders",  # Also when run as `python -m` (__main__).
      "__doc__": f"TFDS builder of the `{adapter_name}` adapter (see acula_jax.data.tfds_builders).",
      "ADAPTER": adapter_name,
      "adapter_name": classmethod(lambda cls: cls.ADAPTER),
      "BUILDER_CONFIGS": configs,
      "DEFAULT_BUILDER_CONFIG_NAME": DEFAULT_CONFIG,
      "MANUAL_DOWNLOAD_INSTRUCTIONS": instructions,
      "HOMEPAGE": known.get("homepage"),
      "CITATION": known.get("citation"),
  }
  cls = type(known.get("class_name") or _camel(adapter_name), (AdapterBuilder,), namespace)
  _CLASSES[adapter_name] = cls
  return cls


Physionet2016 = builder_class("physionet2016")
Yaseen2018 = builder_class("yaseen2018")
HlsCmds = builder_class("hls_cmds")


def register_all() -> dict:
  """Makes the builders of every registered adapter (so `tfds.builder(NAME)` finds them)."""
  return {name: builder_class(name) for name in sorted(datasets.ADAPTERS)}


# ----------------------------------------------------------------------------------------------------
# Reading back.
# ----------------------------------------------------------------------------------------------------

def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def to_record(example: dict) -> dict:
  """A TFDS example (from `tfds.data_source`) as the project's audio-record dict
  (`records.decode_audio_example`'s): text as str, labels and metadata parsed from JSON."""
  wave = np.asarray(example["audio"], dtype=np.float32)
  return {
      "id": _text(example["id"]), "dataset": _text(example["dataset"]),
      "subject_id": _text(example["subject_id"]), "split": _text(example["split"]),
      "audio": wave, "audio_sha256": records.audio_sha256(wave), "num_samples": int(example["num_samples"]),
      "sample_rate": int(example["sample_rate"]),
      "labels": json.loads(_text(example["labels"])),
      "metadata": json.loads(_text(example["metadata"])),
  }


# ----------------------------------------------------------------------------------------------------
# CLI.
# ----------------------------------------------------------------------------------------------------

def build(dataset: str, manual_dir, data_dir, *, options=None, chunk_seconds=0.0, seed=0, config=None,
          workers=1):
  """Builds `dataset` from `manual_dir` into `data_dir` (ArrayRecord); returns the builder."""
  cls = builder_class(dataset)
  if not os.path.isdir(os.fspath(manual_dir)):
    raise DataError(manual_dir, "manual directory does not exist")
  if config is None:
    config = cls.config_for(chunk_seconds=chunk_seconds, seed=seed, **dict(options or {}))
  builder = cls(data_dir=None if data_dir is None else os.fspath(data_dir), config=config,
                workers=workers)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=os.fspath(manual_dir)))
  return builder


def _define_flags():
  flags.DEFINE_string("dataset", None, f"Adapter name: {', '.join(sorted(datasets.ADAPTERS))}.")
  flags.DEFINE_string("manual_dir", None, "The dataset's root folder, laid out as published.")
  flags.DEFINE_string("data_dir", None, "TFDS data directory (default: TFDS's, ~/tensorflow_datasets).")
  flags.DEFINE_string("config", None, "A predefined config name (else one named after the options).")
  flags.DEFINE_float("chunk_seconds", 0.0, "> 0: store chunks of this length (ids ID#k), not whole files.")
  flags.DEFINE_integer("seed", 0, "Split seed, passed to adapters that split with one.")
  flags.DEFINE_integer("workers", 1, "Decoding threads.")
  flags.DEFINE_multi_string("option", [], "Adapter option key=value (repeatable), e.g. limit=40.")
  flags.DEFINE_string("options", "", "Adapter options as one string: k=v,k2=v2.")
  flags.mark_flags_as_required(["dataset", "manual_dir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cfg = flags.FLAGS
  options = prepare.parse_options(cfg.option, cfg.options)
  if cfg.config and (options or cfg.chunk_seconds or cfg.seed):
    raise app.UsageError("--config names a predefined config; do not combine it with options")
  builder = build(cfg.dataset, cfg.manual_dir, cfg.data_dir, options=options,
                  chunk_seconds=cfg.chunk_seconds, seed=cfg.seed, config=cfg.config, workers=cfg.workers)
  meta = builder.info.metadata
  print(f"{builder.info.full_name} in {builder.data_dir}: "
        + ", ".join(f"{s} {n}" for s, n in sorted(meta.get("counts", {}).items()))
        + f"; skipped {len(meta.get('skipped', []))}"
        + (f" ({prepare.summarize_skipped(meta['skipped'])})" if meta.get("skipped") else ""))
  print(f"read it with: tfds.data_source({builder.info.full_name.rsplit('/', 1)[0]!r}, "
        f"data_dir={os.fspath(builder.data_dir_root)!r})")
  sys.stdout.flush()


if __name__ == "__main__":
  errors.run_program(main, _define_flags)
