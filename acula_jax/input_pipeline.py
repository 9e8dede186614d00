"""Grain input pipelines: audio records joined with teacher embeddings by example id.

Training batches carry fixed-length 16 kHz waveforms (and, when aligning, the teacher embedding of each
example's report). The OPERA log-mel is computed from them by `audio.log_mel` at the start of the jitted
train step, so the front end runs batched on the accelerator instead of per example on the host.
"""
import dataclasses
from typing import Iterator

import grain
import jax
import numpy as np

from acula_jax import audio
from acula_jax import errors
from acula_jax import records


@dataclasses.dataclass(frozen=True)
class TeacherTable:
  """Teacher embeddings held in memory, looked up by example id."""
  source: str
  embeddings: np.ndarray      # float32 [n, dim]
  index: dict                 # example id -> row
  manifest: dict

  @classmethod
  def load(cls, teacher_dir):
    ids, embeddings, manifest = records.load_teacher_embeddings(teacher_dir)
    return cls(str(teacher_dir), embeddings, {k: i for i, k in enumerate(ids)}, manifest)

  @property
  def dim(self) -> int:
    return int(self.embeddings.shape[1])

  def lookup(self, example_id: str) -> np.ndarray:
    row = self.index.get(example_id)
    if row is None:
      raise errors.MissingTeacherError(
          example_id, f"no teacher embedding in {self.source} (was its report missing or empty?)")
    return self.embeddings[row]


def clip_samples(config) -> int:
  """Waveform length whose log-mel has exactly `config.data.clip_frames` frames."""
  return audio.num_samples_for_frames(config.data.clip_frames, config.audio.hop)


class _CropAndJoin(grain.transforms.RandomMap):
  """Random crop (zero-padded when short) and, when aligning, the example's teacher embedding."""

  def __init__(self, num_samples: int, sample_rate: int, teacher: TeacherTable | None):
    self._num_samples = num_samples
    self._sample_rate = sample_rate
    self._teacher = teacher

  def random_map(self, example, rng: np.random.Generator):
    if example["sample_rate"] != self._sample_rate:
      raise errors.BadAudioError(
          example["id"], f"stored at {example['sample_rate']} Hz, expected {self._sample_rate} Hz; "
          "re-run the record preparation, which resamples")
    out = {"audio": audio.crop_or_pad(example["audio"], self._num_samples, rng=rng)}
    if self._teacher is not None:
      out["text_embedding"] = self._teacher.lookup(example["id"])
    return out


def steps_per_epoch(config, num_examples: int) -> int:
  steps = num_examples // config.batch_size
  if steps == 0:
    raise ValueError(f"{config.data.records_dir}: {num_examples} training examples is fewer than one "
                     f"batch of {config.batch_size}")
  return steps


def create_train_dataset(config, teacher: TeacherTable | None, *, num_epochs=None) -> grain.IterDataset:
  """Shuffled, repeated, batched training data for this process (its 1/process_count share).

  Every process sees a disjoint slice of the records, shuffled with the same seed, and batches of
  `batch_size // process_count` examples; the global batch is assembled on the devices.
  """
  source = records.AudioRecordSource(config.data.records_dir, config.data.train_split)
  num_processes, process = jax.process_count(), jax.process_index()
  if config.batch_size % num_processes:
    raise ValueError(f"batch_size {config.batch_size} is not divisible by {num_processes} processes")
  dataset = grain.MapDataset.source(source)[process::num_processes]
  dataset = dataset.seed(config.seed).shuffle().repeat(num_epochs)
  dataset = dataset.random_map(_CropAndJoin(clip_samples(config), config.audio.sample_rate, teacher))
  dataset = dataset.batch(config.batch_size // num_processes, drop_remainder=True)
  dataset = dataset.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4))
  if config.data.num_workers > 0:
    dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=config.data.num_workers))
  return dataset


def iterate_split(records_dir, split) -> Iterator[dict]:
  """Every record of one split in stored order (evaluation: no crop, no shuffle)."""
  source = records.AudioRecordSource(records_dir, split)
  for i in range(len(source)):
    yield source[i]
