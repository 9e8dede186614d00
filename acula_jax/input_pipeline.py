"""Grain input pipelines: audio records joined with teacher embeddings by example id.

Training batches carry fixed-length 16 kHz waveforms (and, when aligning, the teacher embedding of each
example's report, read from the teacher shards for this process's rows only). The encoder's front end
(OPERA's log-mel, AudioMAE's fbank: `frontends.spectrogram`) is computed from them at the start of the
jitted train step, so it runs batched on the accelerator instead of per example on the host.
"""
from typing import Iterator

import grain
import jax
import numpy as np

from acula_jax import errors
from acula_jax.audio import frontends
from acula_jax.audio import io as audio_io
from acula_jax.data import records
from acula_jax.data import teacher as teacher_lib


def clip_samples(config) -> int:
  """Waveform length whose spectrogram (`config.audio`) has exactly `config.data.clip_frames` frames."""
  return frontends.window_samples(config.data.clip_frames, config.audio)


class _CropAndJoin(grain.transforms.RandomMap):
  """Random crop (zero-padded when short) and, when aligning, the example's teacher embedding."""

  def __init__(self, num_samples: int, sample_rate: int, teacher: teacher_lib.TeacherTable | None):
    self._num_samples = num_samples
    self._sample_rate = sample_rate
    self._teacher = teacher

  def random_map(self, example, rng: np.random.Generator):
    if example["sample_rate"] != self._sample_rate:
      raise errors.BadAudioError(
          example["id"], f"stored at {example['sample_rate']} Hz, expected {self._sample_rate} Hz; "
          "re-run the record preparation, which resamples")
    out = {"audio": audio_io.crop_or_pad(example["audio"], self._num_samples, rng=rng)}
    if self._teacher is not None:
      out["text_embedding"] = self._teacher.lookup(example["id"])
    return out


def steps_per_epoch(config, num_examples: int) -> int:
  steps = num_examples // config.batch_size
  if steps == 0:
    raise ValueError(f"{config.data.records_dir}: {num_examples} training examples is fewer than one "
                     f"batch of {config.batch_size}")
  return steps


class _ProcessShare(grain.MapDataset):
  """This process's rows of every global batch of a globally ordered dataset.

  Global batch b holds elements [b * G, (b + 1) * G) of the parent; process p takes rows
  [p * L, (p + 1) * L) of each (L = G / processes). Every process reads only its share, and the
  global batch is the same whatever the number of processes.
  """

  def __init__(self, parent: grain.MapDataset, global_batch: int, num_processes: int, process: int):
    super().__init__(parent)
    self._global_batch = global_batch
    self._local_batch = global_batch // num_processes
    self._offset = process * self._local_batch
    self._length = len(parent) // global_batch * self._local_batch

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    batch, row = divmod(index, self._local_batch)
    return self._parent[batch * self._global_batch + self._offset + row]

  def __str__(self) -> str:
    return f"_ProcessShare(global_batch={self._global_batch}, offset={self._offset})"


def create_train_dataset(config, teacher: teacher_lib.TeacherTable | None, *, num_epochs=None,
                         indices=None) -> grain.IterDataset:
  """Shuffled, repeated, cropped training data: this process's rows of each global batch.

  The order, the crops and the global batches depend only on the seed, never on the number of
  processes, so a run on one host and on many see the same batches. `indices`: train on these
  records of the split only (default: all).
  """
  source = records.open_split(config.data.records_dir, config.data.train_split)
  if indices is not None:
    source = records.SubsetSource(source, indices)
  num_processes = jax.process_count()
  if config.batch_size % num_processes:
    raise ValueError(f"batch_size {config.batch_size} is not divisible by {num_processes} processes")
  dataset = grain.MapDataset.source(source).seed(config.seed).shuffle().repeat(num_epochs)
  dataset = dataset.random_map(_CropAndJoin(clip_samples(config), config.audio.sample_rate, teacher))
  dataset = _ProcessShare(dataset, config.batch_size, num_processes, jax.process_index())
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
