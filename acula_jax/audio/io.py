"""Reading recordings on the host: decode, downmix, resample to `SAMPLE_RATE`, check, crop.

Numpy only. Every problem with a recording becomes a `BadAudioError` naming the file, so bad input
never surfaces as a crash deep inside JAX.
"""
import dataclasses
import os

import numpy as np
import soundfile

from acula_jax.audio import SAMPLE_RATE
from acula_jax.errors import BadAudioError

# Below this peak amplitude a clip is treated as silent: one LSB of 16-bit PCM
# is 3e-5, so only digital silence (or float near-silence) trips it.
SILENCE_PEAK = 1e-6

@dataclasses.dataclass
class FileNotes:
  """What decoding a file noticed without failing: a data chunk shorter than its header says, the
  peak magnitude before resampling (float files may exceed 1.0), the file's own rate and channels."""
  peak: float = 0.0
  truncated: tuple | None = None     # (seconds the header declares, seconds present)
  sample_rate: int = 0               # the file's rate, before resampling
  channels: int = 1                  # > 1: averaged (downmix=True)


def load_audio(path, sample_rate=SAMPLE_RATE, *, downmix=False):
  """Reads a recording as mono float32 at `sample_rate` (see `decode_audio`)."""
  return decode_audio(path, sample_rate, downmix=downmix)[0]


def wav_truncation(path):
  """(declared seconds, present seconds) when a RIFF/WAVE file's data chunk is cut short, else None.

  libsndfile decodes such a file's intact prefix without a word; its header still says how long the
  recording was meant to be.
  """
  try:
    with open(path, "rb") as f:
      header = f.read(12)
      if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        return None
      block_align = byte_rate = None
      while True:
        chunk = f.read(8)
        if len(chunk) < 8:
          return None
        chunk_id, size = chunk[:4], int.from_bytes(chunk[4:], "little")
        if chunk_id == b"fmt ":
          fmt = f.read(size)
          byte_rate, block_align = int.from_bytes(fmt[8:12], "little"), int.from_bytes(fmt[12:14], "little")
          f.seek(size % 2, 1)
        elif chunk_id == b"data":
          present = os.fstat(f.fileno()).st_size - f.tell()
          if present >= size or not byte_rate or not block_align:
            return None
          usable = present // block_align * block_align
          return size / byte_rate, usable / byte_rate
        else:
          f.seek(size + size % 2, 1)
  except OSError:
    return None


def decode_audio(path, sample_rate=SAMPLE_RATE, *, downmix=False):
  """Reads a recording as mono float32 at `sample_rate`; returns (waveform, FileNotes).

  Decoding uses soundfile (libsndfile); formats it cannot open are retried with
  audioread. Resampling uses librosa's soxr_hq, so for a mono file the result
  equals `librosa.load(path, sr=sample_rate)`. Samples are not clipped to
  [-1, 1] (resampling may overshoot slightly), again to match librosa.

  A truncated file that libsndfile can still decode (e.g. a WAV cut part-way
  through its data chunk) yields the intact prefix of the recording; it is
  not padded or filled with garbage.

  Args:
    path: file path.
    sample_rate: output sample rate in Hz.
    downmix: average the channels of a multi-channel file instead of failing.

  Returns:
    float32 array of shape (num_samples,), and the FileNotes of the file.

  Raises:
    BadAudioError: the file is missing, unreadable, empty, non-finite, silent,
      or has several channels and `downmix` is False.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    reason = "is a directory, not an audio file" if os.path.isdir(path) else "file not found"
    raise BadAudioError(path, reason)
  data, file_rate = _decode(path)  # (frames, channels) float32
  if data.shape[0] == 0:
    raise BadAudioError(path, "contains no samples (0 frames)")
  channels = data.shape[1]
  if channels > 1:
    if not downmix:
      raise BadAudioError(
          path, f"{channels} channels; expected mono (acula_jax.data.prepare --option=downmix=true, or "
          "audio.load_audio(..., downmix=True), averages them)")
    data = data.mean(axis=1, dtype=np.float32)
  else:
    data = data[:, 0]
  # Check before resampling: a NaN would smear over its neighbours.
  wave = check_waveform(data, path)
  notes = FileNotes(peak=float(np.max(np.abs(wave))), truncated=wav_truncation(path), sample_rate=int(file_rate),
                    channels=channels)
  if file_rate != sample_rate:
    wave = _resample(wave, file_rate, sample_rate, path)
  return wave, notes


def _decode(path):
  """Returns ((frames, channels) float32, sample rate) or raises BadAudioError."""
  try:
    data, rate = soundfile.read(path, dtype="float32", always_2d=True)
    return data, int(rate)
  except Exception as sf_error:  # libsndfile raises several types; all mean "can't read".
    try:
      return _decode_with_audioread(path)
    except Exception as ar_error:
      raise BadAudioError(
          path, f"unreadable or corrupt audio (soundfile: {_describe(sf_error)}; "
          f"audioread: {_describe(ar_error)})") from sf_error


def _decode_with_audioread(path):
  """Fallback decoder for formats libsndfile lacks; audioread yields 16-bit PCM."""
  import audioread  # pylint: disable=g-import-not-at-top  (rarely needed)
  with audioread.audio_open(path) as reader:
    channels, rate = reader.channels, reader.samplerate
    pcm = b"".join(reader)
  samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
  return samples.reshape(-1, channels), int(rate)


def _describe(error):
  text = str(error).strip() or "no details"
  return f"{type(error).__name__}: {text}"


def _resample(wave, orig_rate, target_rate, path):
  import librosa  # pylint: disable=g-import-not-at-top  (slow import; only when resampling)
  if orig_rate <= 0:
    raise BadAudioError(path, f"invalid sample rate {orig_rate} Hz in header")
  out = librosa.resample(wave, orig_sr=orig_rate, target_sr=target_rate, res_type="soxr_hq")
  return np.asarray(out, dtype=np.float32)


def check_waveform(wave, name, *, min_samples=1):
  """Applies `load_audio`'s content checks to an in-memory waveform.

  Args:
    wave: 1-D array of floating-point samples.
    name: what to call the waveform in errors (a path or example id).
    min_samples: fewest samples accepted.

  Returns:
    The waveform as a float32 array.

  Raises:
    BadAudioError: not 1-D, not floating point, too short, non-finite, silent.
  """
  wave = np.asarray(wave)
  if wave.ndim != 1:
    raise BadAudioError(name, f"waveform has shape {wave.shape}; expected 1-D mono samples")
  if not np.issubdtype(wave.dtype, np.floating):
    # Integer PCM would pass every check yet be 32768x too loud downstream.
    raise BadAudioError(
        name, f"samples have dtype {wave.dtype}; expected floating point in [-1, 1]")
  if wave.size < min_samples:
    raise BadAudioError(name, f"has {wave.size} samples; need at least {min_samples}")
  # Cast first: a float64 value too large for float32 is inf once cast, and
  # is then reported below, so numpy's overflow warning adds nothing.
  with np.errstate(over="ignore"):
    wave = wave.astype(np.float32, copy=False)
  finite = np.isfinite(wave)
  if not finite.all():
    bad = np.flatnonzero(~finite)
    raise BadAudioError(
        name, f"{bad.size} of {wave.size} samples are NaN or infinite "
        f"(first at index {bad[0]})")
  peak = float(np.max(np.abs(wave))) if wave.size else 0.0
  if peak < SILENCE_PEAK:
    raise BadAudioError(name, f"silent (peak |sample| = {peak:.3g} < {SILENCE_PEAK:g})")
  return wave


# ----------------------------------------------------------------------------
# Cropping and frame arithmetic.
# ----------------------------------------------------------------------------


def crop_or_pad(wave, num_samples, *, offset=None, rng=None):
  """Crops or zero-pads the last axis of `wave` to exactly `num_samples`.

  A longer input is cropped at a random offset when `rng` (a
  `np.random.Generator`) is given, else at `offset`, else centrally. A shorter
  input is zero-padded at the end (`offset` and `rng` are then unused).
  """
  if num_samples < 1:
    raise ValueError(f"num_samples must be >= 1, got {num_samples}")
  if offset is not None and rng is not None:
    raise ValueError("pass offset or rng, not both")
  wave = np.asarray(wave)
  length = wave.shape[-1]
  excess = length - num_samples
  if excess <= 0:
    pad = [(0, 0)] * (wave.ndim - 1) + [(0, -excess)]
    return np.pad(wave, pad)
  if rng is not None:
    offset = int(rng.integers(0, excess + 1))
  elif offset is None:
    offset = excess // 2
  elif not 0 <= offset <= excess:
    raise ValueError(f"offset {offset} out of range [0, {excess}] for length {length}")
  return wave[..., offset:offset + num_samples]
