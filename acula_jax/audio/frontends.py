"""The encoders' front ends (OPERA's log-mel, AudioMAE's Kaldi fbank): jitted, batched JAX.

`log_mel` re-implements OPERA's librosa pipeline (OPERA-GT, -CE and -CT):

  S = librosa.feature.melspectrogram(y, sr=16000, n_fft=1024, hop_length=512,
                                     n_mels=64, fmin=50, fmax=8000)
  S = librosa.power_to_db(S, ref=np.max)
  S = (S - S.min()) / (S.max() - S.min())   # then transposed to (frames, mels)

`kaldi_fbank` re-implements Kaldi's log mel filterbank (`compute-fbank-feats`,
`torchaudio.compliance.kaldi.fbank`), and `audiomae_fbank` is AudioMAE's input
built on it (facebookresearch/AudioMAE, dataset.py `_wav2fbank`/`__getitem__`):

  wave = wave - wave.mean()
  fbank = kaldi.fbank(wave, htk_compat=True, sample_frequency=16000, use_energy=False,
                      window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)
  fbank = zero-pad (in log energy) or crop to 1024 frames
  fbank = (fbank - -4.2677393) / (2 * 4.5689974)      # AudioSet statistics

Which front end an encoder takes is its model module's `FRONTEND` (a key of
`FRONTENDS`). A front-end config is the keyword arguments of its function plus
`frontend` (its name); `spectrogram(waves, **config)` dispatches,
`frontend_for(frontend, config)` picks a front end's settings and
`window_samples(frames, config)` is the waveform length that gives exactly
`frames` frames.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from acula_jax.audio import SAMPLE_RATE

_AMIN = 1e-10  # librosa.power_to_db's floor on power.


# ----------------------------------------------------------------------------
# Frame arithmetic.
# ----------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------
# Kaldi filterbank (JAX) and AudioMAE's input.
# ----------------------------------------------------------------------------

# AudioSet statistics of AudioMAE's fbanks (its main_pretrain.py `norm_stats['audioset']`).
AUDIOSET_MEAN = -4.2677393
AUDIOSET_STD = 4.5689974
KALDI_WINDOWS = ("povey", "hanning", "hamming", "rectangular", "blackman")
# Kaldi's floor on mel energies before the log: float32 machine epsilon.
_KALDI_EPS = float(np.finfo(np.float32).eps)


def kaldi_frame_sizes(sample_rate=SAMPLE_RATE, frame_length_ms=25.0, frame_shift_ms=10.0):
  """(window length, shift) in samples, truncated as Kaldi and torchaudio do."""
  length = int(sample_rate * frame_length_ms * 0.001)
  shift = int(sample_rate * frame_shift_ms * 0.001)
  if length < 2 or shift < 1:
    raise ValueError(f"frame length {frame_length_ms} ms / shift {frame_shift_ms} ms at "
                     f"{sample_rate} Hz give {length} / {shift} samples")
  return length, shift


def kaldi_num_frames(num_samples, sample_rate=SAMPLE_RATE, frame_length_ms=25.0, frame_shift_ms=10.0):
  """Frames of Kaldi's snip_edges=True framing: whole windows only (0 when shorter than one)."""
  length, shift = kaldi_frame_sizes(sample_rate, frame_length_ms, frame_shift_ms)
  return 0 if num_samples < length else 1 + (num_samples - length) // shift


def _kaldi_window(window_type, length, blackman_coeff=0.42):
  """Kaldi's symmetric analysis windows (feature-window.cc), float32."""
  if window_type not in KALDI_WINDOWS:
    raise ValueError(f"window_type must be one of {KALDI_WINDOWS}, got {window_type!r}")
  a = 2.0 * np.pi / (length - 1)
  n = np.arange(length, dtype=np.float64)
  hann = 0.5 - 0.5 * np.cos(a * n)
  window = {
      "hanning": hann,
      "povey": hann ** 0.85,
      "hamming": 0.54 - 0.46 * np.cos(a * n),
      "rectangular": np.ones(length),
      "blackman": blackman_coeff - 0.5 * np.cos(a * n) + (0.5 - blackman_coeff) * np.cos(2 * a * n),
  }[window_type]
  return window.astype(np.float32)


def kaldi_mel_scale(hz):
  """Kaldi's (HTK's) mel scale, 1127 ln(1 + f / 700)."""
  return 1127.0 * np.log1p(np.asarray(hz, np.float64) / 700.0)


@functools.lru_cache(maxsize=16)
def _kaldi_mel_banks_cached(num_bins, padded_length, sample_rate, low_freq, high_freq):
  nyquist = 0.5 * sample_rate
  high = high_freq if high_freq > 0 else nyquist + high_freq
  if not 0.0 <= low_freq < high <= nyquist:
    raise ValueError(f"need 0 <= low_freq < high_freq <= {nyquist} Hz, got {low_freq}, {high} "
                     f"(high_freq {high_freq}: <= 0 counts down from the Nyquist frequency)")
  # Triangles equally spaced in mels over the FFT bins below Nyquist (Kaldi leaves the Nyquist bin
  # out; it gets a zero row so that the whole rfft output multiplies).
  mel_low, mel_high = kaldi_mel_scale(low_freq), kaldi_mel_scale(high)
  delta = (mel_high - mel_low) / (num_bins + 1)
  left = mel_low + delta * np.arange(num_bins)[:, None]
  center, right = left + delta, left + 2 * delta
  mel = kaldi_mel_scale(sample_rate / padded_length * np.arange(padded_length // 2))[None, :]
  weights = np.maximum(0.0, np.minimum((mel - left) / (center - left), (right - mel) / (right - center)))
  weights = np.concatenate([weights.T, np.zeros((1, num_bins))]).astype(np.float32)
  weights.setflags(write=False)
  return weights


def kaldi_mel_banks(num_bins, padded_length, sample_rate=SAMPLE_RATE, low_freq=20.0, high_freq=0.0):
  """Kaldi's triangular mel filters (no VTLN) as a [padded_length // 2 + 1, num_bins] matrix."""
  return _kaldi_mel_banks_cached(int(num_bins), int(padded_length), float(sample_rate),
                                 float(low_freq), float(high_freq)).copy()


@functools.partial(jax.jit, static_argnames=(
    "sample_rate", "num_mel_bins", "frame_length_ms", "frame_shift_ms", "window_type", "preemphasis",
    "remove_dc_offset", "round_to_power_of_two", "low_freq", "high_freq"))
def kaldi_fbank(waves, *, sample_rate=SAMPLE_RATE, num_mel_bins=23, frame_length_ms=25.0,
                frame_shift_ms=10.0, window_type="povey", preemphasis=0.97, remove_dc_offset=True,
                round_to_power_of_two=True, low_freq=20.0, high_freq=0.0):
  """Kaldi's log mel filterbank energies, as `torchaudio.compliance.kaldi.fbank`.

  Defaults are Kaldi's. Fixed choices: snip_edges=True (whole windows only), no dither, power
  spectrum, no energy column (use_energy=False; htk_compat then changes nothing), no VTLN.
  Each frame: DC offset removed, pre-emphasis x[i] - k x[i-1] (x[-1] = x[0]), the window, zero
  padding to the FFT length (the next power of two), |rfft|^2, mel filters, log(max(., eps)).

  Args:
    waves: float waveforms [..., n] in any scale (AudioMAE uses [-1, 1]).

  Returns:
    float32 [..., kaldi_num_frames(n), num_mel_bins].
  """
  waves = jnp.asarray(waves, jnp.float32)
  length, shift = kaldi_frame_sizes(sample_rate, frame_length_ms, frame_shift_ms)
  frames = kaldi_num_frames(waves.shape[-1], sample_rate, frame_length_ms, frame_shift_ms)
  if frames == 0:
    raise ValueError(f"{waves.shape[-1]} samples is shorter than one {length}-sample Kaldi frame")
  index = shift * np.arange(frames)[:, None] + np.arange(length)[None, :]
  x = waves[..., index]  # [..., frames, length]
  if remove_dc_offset:
    x = x - jnp.mean(x, axis=-1, keepdims=True)
  if preemphasis:
    previous = jnp.concatenate([x[..., :1], x[..., :-1]], axis=-1)
    x = x - preemphasis * previous
  x = x * _kaldi_window(window_type, length)
  fft_length = 1 << (length - 1).bit_length() if round_to_power_of_two else length
  spectrum = jnp.fft.rfft(x, n=fft_length, axis=-1)
  power = jnp.square(spectrum.real) + jnp.square(spectrum.imag)
  filters = kaldi_mel_banks(num_mel_bins, fft_length, sample_rate, low_freq, high_freq)
  mel = jnp.matmul(power, filters, precision=jax.lax.Precision.HIGHEST)
  return jnp.log(jnp.maximum(mel, _KALDI_EPS))


@functools.partial(jax.jit, static_argnames=(
    "sample_rate", "num_mel_bins", "frame_length_ms", "frame_shift_ms", "window_type",
    "target_frames", "mean", "std"))
def audiomae_fbank(waves, *, sample_rate=SAMPLE_RATE, num_mel_bins=128, frame_length_ms=25.0,
                   frame_shift_ms=10.0, window_type="hanning", target_frames=1024,
                   mean=AUDIOSET_MEAN, std=AUDIOSET_STD):
  """AudioMAE's input: normalised Kaldi fbanks of exactly `target_frames` frames.

  Per clip: the waveform's mean is removed, `kaldi_fbank` (Kaldi's defaults otherwise:
  pre-emphasis 0.97, per-frame DC removal, 20 Hz to Nyquist), then the log energies are zero-padded
  at the end or cropped to `target_frames` and normalised as (x - mean) / (2 std). As in AudioMAE's
  dataset, padding happens before normalisation, so padded frames read -mean / (2 std) (0.467 with
  the AudioSet statistics). (OPERA's AudioMAE baseline skips the normalisation; we follow AudioMAE.)
  With 25 ms frames (a 512-point FFT) the fourth of 128 mel triangles covers no FFT bin: Kaldi refuses
  that setting, torchaudio (so AudioMAE) returns the floor log(eps) there, and so does this.

  Returns:
    float32 [..., target_frames, num_mel_bins].
  """
  waves = jnp.asarray(waves, jnp.float32)
  waves = waves - jnp.mean(waves, axis=-1, keepdims=True)
  fbank = kaldi_fbank(waves, sample_rate=sample_rate, num_mel_bins=num_mel_bins,
                      frame_length_ms=frame_length_ms, frame_shift_ms=frame_shift_ms,
                      window_type=window_type)
  frames = fbank.shape[-2]
  if frames < target_frames:
    pad = [(0, 0)] * (fbank.ndim - 2) + [(0, target_frames - frames), (0, 0)]
    fbank = jnp.pad(fbank, pad)
  else:
    fbank = fbank[..., :target_frames, :]
  return (fbank - mean) / (2.0 * std)


# ----------------------------------------------------------------------------
# Front ends by name and by encoder family.
# ----------------------------------------------------------------------------

FRONTENDS = {"log_mel": log_mel, "audiomae_fbank": audiomae_fbank}
# OPERA's settings (configs/acula.py's `config.audio`) and AudioMAE's (ViT-B/16: 1024 x 128).
OPERA_LOG_MEL = dict(frontend="log_mel", sample_rate=SAMPLE_RATE, n_fft=1024, hop=512, n_mels=64, fmin=50.0,
                     fmax=8000.0, top_db=80.0)
AUDIOMAE_FBANK = dict(frontend="audiomae_fbank", sample_rate=SAMPLE_RATE, num_mel_bins=128,
                      frame_length_ms=25.0, frame_shift_ms=10.0, window_type="hanning",
                      target_frames=1024, mean=AUDIOSET_MEAN, std=AUDIOSET_STD)


def frontend_name(audio_config) -> str:
  """The front end a config names (its `frontend`)."""
  name = dict(audio_config).get("frontend")
  if name is None:
    raise ValueError(f"the audio config {dict(audio_config)} names no front end; add frontend= one of "
                     f"{', '.join(FRONTENDS)}")
  if name not in FRONTENDS:
    raise ValueError(f"unknown front end {name!r}; available: {', '.join(FRONTENDS)}")
  return name


def spectrogram(waves, **audio_config):
  """[..., n] waves -> [..., frames, bins] with the front end that `audio_config` names."""
  name = frontend_name(audio_config)
  del audio_config["frontend"]
  return FRONTENDS[name](waves, **audio_config)


def frontend_for(name, audio_config=None, *, spec_shape=None) -> dict:
  """The settings of front end `name` (a key of `FRONTENDS`, an encoder module's `FRONTEND`).

  `audio_config` (a run's `config.audio`) when it is that front end's, else its default: OPERA's
  log-mel, or AudioMAE's fbank with frames and bins from the model's `spec_shape`.
  """
  if name not in FRONTENDS:
    raise ValueError(f"unknown front end {name!r}; available: {', '.join(FRONTENDS)}")
  if audio_config is not None and frontend_name(audio_config) == name:
    return dict(audio_config)
  if name == "log_mel":
    return dict(OPERA_LOG_MEL)
  config = dict(AUDIOMAE_FBANK)
  if spec_shape is not None:
    config.update(target_frames=int(spec_shape[0]), num_mel_bins=int(spec_shape[1]))
  return config


def check_frontend(encoder, want, audio_config, *, spec_shape=None):
  """Raises ValueError unless `audio_config` is front end `want`, the one `encoder` (of input shape
  `spec_shape`) takes."""
  got = frontend_name(audio_config)
  if want != got:
    raise ValueError(f"encoder {encoder!r} takes the {want!r} front end but config.audio names {got!r}; "
                     f"use configs/acula.py:encoder={encoder}'s audio settings")
  if got == "audiomae_fbank" and spec_shape is not None:
    config = dict(audio_config)
    shape = (config.get("target_frames", 1024), config.get("num_mel_bins", 128))
    if tuple(shape) != tuple(spec_shape):
      raise ValueError(f"config.audio gives {shape[0]} frames x {shape[1]} mel bins but the model's "
                       f"spec_shape is {tuple(spec_shape)}; set audio.target_frames / num_mel_bins to match")


def window_samples(frames, audio_config) -> int:
  """Waveform length whose spectrogram under `audio_config` has exactly `frames` real frames."""
  if frames < 1:
    raise ValueError(f"frames must be >= 1, got {frames}")
  config = dict(audio_config)
  if frontend_name(config) == "log_mel":
    return num_samples_for_frames(frames, config.get("hop", 512))
  length, shift = kaldi_frame_sizes(config.get("sample_rate", SAMPLE_RATE),
                                    config.get("frame_length_ms", 25.0), config.get("frame_shift_ms", 10.0))
  return length + (frames - 1) * shift
