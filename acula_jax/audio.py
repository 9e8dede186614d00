"""Audio ingestion and OPERA's log-mel front end.

Ingestion (`load_audio`, `check_waveform`) is numpy and turns every problem with
a recording into a `BadAudioError` naming the file, so bad input never surfaces
as a crash deep inside JAX. `log_mel` is a jitted JAX re-implementation of
OPERA's librosa pipeline:

  S = librosa.feature.melspectrogram(y, sr=16000, n_fft=1024, hop_length=512,
                                     n_mels=64, fmin=50, fmax=8000)
  S = librosa.power_to_db(S, ref=np.max)
  S = (S - S.min()) / (S.max() - S.min())   # then transposed to (frames, mels)
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import soundfile

from acula_jax.errors import BadAudioError

SAMPLE_RATE = 16000
# Below this peak amplitude a clip is treated as silent: one LSB of 16-bit PCM
# is 3e-5, so only digital silence (or float near-silence) trips it.
SILENCE_PEAK = 1e-6
_AMIN = 1e-10  # librosa.power_to_db's floor on power.


# ----------------------------------------------------------------------------
# Ingestion.
# ----------------------------------------------------------------------------


def load_audio(path, sample_rate=SAMPLE_RATE, *, downmix=False):
  """Reads a recording as mono float32 at `sample_rate`.

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
    float32 array of shape (num_samples,).

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
          path, f"{channels} channels; expected mono (pass downmix=True to average them)")
    data = data.mean(axis=1, dtype=np.float32)
  else:
    data = data[:, 0]
  # Check before resampling: a NaN would smear over its neighbours.
  wave = check_waveform(data, path)
  if file_rate != sample_rate:
    wave = _resample(wave, file_rate, sample_rate, path)
  return wave


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


def num_frames(num_samples, hop=512):
  """STFT frame count for librosa's center=True framing."""
  return 1 + num_samples // hop


def num_samples_for_frames(frames, hop=512):
  """Smallest waveform length for which `num_frames` gives `frames`."""
  if frames < 1:
    raise ValueError(f"frames must be >= 1, got {frames}")
  return (frames - 1) * hop


# ----------------------------------------------------------------------------
# Mel filterbank (numpy; librosa.filters.mel with htk=False, norm="slaney").
# ----------------------------------------------------------------------------

# Slaney's mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above.
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = np.log(6.4) / 27.0


def _hz_to_mel(hz):
  hz = np.asarray(hz, dtype=np.float64)
  log_part = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOG_STEP
  return np.where(hz >= _MIN_LOG_HZ, log_part, hz / _F_SP)


def _mel_to_hz(mel):
  mel = np.asarray(mel, dtype=np.float64)
  log_part = _MIN_LOG_HZ * np.exp(_LOG_STEP * (np.maximum(mel, _MIN_LOG_MEL) - _MIN_LOG_MEL))
  return np.where(mel >= _MIN_LOG_MEL, log_part, mel * _F_SP)


@functools.lru_cache(maxsize=16)
def _mel_filterbank_cached(sample_rate, n_fft, n_mels, fmin, fmax):
  fft_hz = np.linspace(0.0, sample_rate / 2.0, 1 + n_fft // 2)
  # n_mels triangles need n_mels + 2 edges, equally spaced in mels.
  edges_hz = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
  widths = np.diff(edges_hz)
  offsets = edges_hz[:, None] - fft_hz[None, :]  # (n_mels + 2, bins)
  rising = -offsets[:-2] / widths[:-1, None]
  falling = offsets[2:] / widths[1:, None]
  weights = np.maximum(0.0, np.minimum(rising, falling))
  # Slaney normalisation: each triangle has unit area in Hz.
  weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
  weights = weights.T.astype(np.float32)
  weights.setflags(write=False)  # Shared by the cache.
  return weights


def mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax):
  """Slaney mel filterbank, equal to `librosa.filters.mel(...).T`.

  Returns:
    float32 array of shape (1 + n_fft // 2, n_mels): power spectrum @ filters.
  """
  fmax = sample_rate / 2.0 if fmax is None else fmax
  if not 0 <= fmin < fmax <= sample_rate / 2.0:
    raise ValueError(f"need 0 <= fmin < fmax <= sample_rate / 2, got {fmin}, {fmax}, {sample_rate}")
  return _mel_filterbank_cached(
      int(sample_rate), int(n_fft), int(n_mels), float(fmin), float(fmax)).copy()


# ----------------------------------------------------------------------------
# Log-mel front end (JAX).
# ----------------------------------------------------------------------------


def _periodic_hann(n):
  """scipy.signal.get_window("hann", n), i.e. the periodic (DFT-even) window."""
  return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)).astype(np.float32)


def _frame(padded, n_fft, hop, frames):
  """Cuts [..., padded_len] into [..., frames, n_fft] overlapping frames."""
  if n_fft % hop == 0:
    # Frames are runs of n_fft // hop consecutive hop-sized blocks: a reshape
    # plus a few shifted slices, no gather.
    per_frame = n_fft // hop
    blocks = padded[..., :(frames + per_frame - 1) * hop]
    blocks = blocks.reshape(*blocks.shape[:-1], frames + per_frame - 1, hop)
    parts = [blocks[..., j:j + frames, :] for j in range(per_frame)]
    return jnp.concatenate(parts, axis=-1)
  index = hop * np.arange(frames)[:, None] + np.arange(n_fft)[None, :]
  return padded[..., index]


@functools.partial(
    jax.jit,
    static_argnames=("sample_rate", "n_fft", "hop", "n_mels", "fmin", "fmax", "top_db"))
def log_mel(waves, *, sample_rate=SAMPLE_RATE, n_fft=1024, hop=512, n_mels=64,
            fmin=50.0, fmax=8000.0, top_db=80.0):
  """OPERA's log-mel spectrogram, scaled to [0, 1] per clip.

  Args:
    waves: float waveforms of shape [..., n].
    sample_rate, n_fft, hop, n_mels, fmin, fmax: librosa melspectrogram settings.
    top_db: dynamic range kept below each clip's peak (None keeps all).

  Returns:
    float32 [..., num_frames(n, hop), n_mels]. A constant clip maps to zeros.
  """
  waves = jnp.asarray(waves, jnp.float32)
  length = waves.shape[-1]
  frames = num_frames(length, hop)
  # center=True with pad_mode="constant" (librosa >= 0.10 default).
  pad = [(0, 0)] * (waves.ndim - 1) + [(n_fft // 2, n_fft // 2)]
  padded = jnp.pad(waves, pad)
  windowed = _frame(padded, n_fft, hop, frames) * _periodic_hann(n_fft)
  spectrum = jnp.fft.rfft(windowed, axis=-1)
  # re^2 + im^2 rather than |z|^2: skips a sqrt and its rounding.
  power = jnp.square(spectrum.real) + jnp.square(spectrum.imag)
  filters = mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax)
  # HIGHEST: accelerators otherwise use bf16/tf32 passes, far off librosa in dB.
  mel = jnp.matmul(power, filters, precision=jax.lax.Precision.HIGHEST)
  return _power_to_unit_db(mel, top_db)


def _power_to_unit_db(mel, top_db):
  """power_to_db(ref=max) over each clip's last two axes, then min-max to [0, 1]."""
  clip_axes = (-2, -1)
  ref = jnp.max(mel, axis=clip_axes, keepdims=True)
  db = 10.0 * jnp.log10(jnp.maximum(_AMIN, mel))
  db = db - 10.0 * jnp.log10(jnp.maximum(_AMIN, ref))
  if top_db is not None:
    db = jnp.maximum(db, jnp.max(db, axis=clip_axes, keepdims=True) - top_db)
  low = jnp.min(db, axis=clip_axes, keepdims=True)
  span = jnp.max(db, axis=clip_axes, keepdims=True) - low
  # A constant clip (span 0) would be 0/0 in librosa; map it to zeros instead.
  safe_span = jnp.where(span > 0, span, 1.0)
  return jnp.where(span > 0, (db - low) / safe_span, 0.0).astype(jnp.float32)
