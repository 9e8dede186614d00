"""Tests for acula_jax.audio against librosa, the reference OPERA itself uses."""

import jax
import librosa
import numpy as np
import pytest
import soundfile

from acula_jax import audio
from acula_jax.errors import BadAudioError, DataError

OPERA = dict(sample_rate=16000, n_fft=1024, n_mels=64, fmin=50.0, fmax=8000.0)
EIGHT_SECONDS = 8 * audio.SAMPLE_RATE
TOL = 1e-4  # On the [0, 1] scale: 0.008 dB of the 80 dB range.


def opera_log_mel(wave):
  """OPERA's front end computed with librosa: the reference for `audio.log_mel`."""
  spec = librosa.feature.melspectrogram(
      y=wave, sr=16000, n_mels=64, fmin=50, fmax=8000, n_fft=1024, hop_length=512)
  spec = librosa.power_to_db(spec, ref=np.max)
  spec = (spec - spec.min()) / (spec.max() - spec.min())
  return spec.T


def _structured_signal(seconds=8.0, sr=16000):
  """A chirp over the whole band plus two decaying tones: wide dynamic range."""
  t = np.arange(int(seconds * sr)) / sr
  chirp = 0.3 * librosa.chirp(fmin=60, fmax=6000, sr=sr, duration=seconds)
  tone_a = 0.5 * np.sin(2 * np.pi * 440 * t) * np.exp(-t / 0.5)
  tone_b = 0.2 * np.sin(2 * np.pi * 3000 * t) * np.exp(-t / 2.0)
  return (chirp + tone_a + tone_b).astype(np.float32)


def _assert_bad_audio(path, fragment, **kwargs):
  with pytest.raises(BadAudioError) as info:
    audio.load_audio(path, **kwargs)
  message = str(info.value)
  assert str(path) in message
  assert fragment in message, message
  return message


# ----------------------------------------------------------------------------
# Mel filterbank and log-mel.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("sample_rate,n_fft,n_mels,fmin,fmax", [
    (16000, 1024, 64, 50.0, 8000.0),  # OPERA.
    (22050, 2048, 128, 0.0, None),  # librosa's defaults.
    (2000, 256, 32, 25.0, 900.0),  # PhysioNet's native rate.
])
def test_mel_filterbank_matches_librosa(sample_rate, n_fft, n_mels, fmin, fmax):
  ours = audio.mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax)
  ref = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax).T
  assert ours.shape == (1 + n_fft // 2, n_mels)
  assert ours.dtype == np.float32
  np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("length", [1024, 16000, 40001, EIGHT_SECONDS])
def test_log_mel_matches_librosa_on_noise(length):
  wave = 0.1 * np.random.default_rng(length).standard_normal(length).astype(np.float32)
  ours = np.asarray(audio.log_mel(wave))
  ref = opera_log_mel(wave)
  assert ours.shape == ref.shape == (audio.num_frames(length), 64)
  assert ours.dtype == np.float32
  np.testing.assert_allclose(ours, ref, rtol=0, atol=TOL)


def test_log_mel_matches_librosa_on_structured_signal():
  wave = _structured_signal()
  ours = np.asarray(audio.log_mel(wave))
  ref = opera_log_mel(wave)
  # The top_db floor must actually be reached, or the test misses the clipping.
  assert (ref == 0).mean() > 0.01
  np.testing.assert_allclose(ours, ref, rtol=0, atol=TOL)


def test_log_mel_batch_equals_per_example_and_vmap():
  rng = np.random.default_rng(1)
  waves = rng.standard_normal((3, EIGHT_SECONDS)).astype(np.float32)
  waves *= np.array([[1.0], [1e-3], [30.0]], np.float32)  # Per-clip scaling must not leak.
  waves[1] = _structured_signal()
  batch = np.asarray(audio.log_mel(waves))
  assert batch.shape == (3, 251, 64)
  for wave, row in zip(waves, batch):
    np.testing.assert_allclose(row, np.asarray(audio.log_mel(wave)), rtol=0, atol=1e-6)
  mapped = np.asarray(jax.vmap(audio.log_mel)(waves))
  np.testing.assert_allclose(mapped, batch, rtol=0, atol=1e-6)
  np.testing.assert_allclose(batch[1], opera_log_mel(waves[1]), rtol=0, atol=TOL)


def test_log_mel_constant_clip_is_zero_not_nan():
  out = np.asarray(audio.log_mel(np.zeros((2, 4096), np.float32)))
  assert out.shape == (2, 9, 64)
  assert np.all(out == 0)


def test_log_mel_range_and_other_settings():
  wave = _structured_signal(seconds=2.0)
  ours = np.asarray(audio.log_mel(wave, n_fft=400, hop=160, n_mels=40, fmin=0.0, fmax=None))
  spec = librosa.feature.melspectrogram(y=wave, sr=16000, n_fft=400, hop_length=160, n_mels=40)
  spec = librosa.power_to_db(spec, ref=np.max)
  ref = ((spec - spec.min()) / (spec.max() - spec.min())).T
  np.testing.assert_allclose(ours, ref, rtol=0, atol=TOL)
  assert ours.min() == 0 and ours.max() == 1


def test_log_mel_matches_librosa_on_physionet(shared_data):
  folder = shared_data / "physionet2016" / "training-a"
  paths = [folder / f"a000{i}.wav" for i in (1, 2, 3)]
  paths = [p for p in paths if p.is_file()]
  if not paths:
    pytest.skip(f"no PhysioNet 2016 files under {folder}")
  waves = []
  for path in paths:
    wave = audio.load_audio(path)
    assert soundfile.info(str(path)).samplerate == 2000  # Resampled 8x on load.
    # load_audio is librosa.load (whose default res_type is soxr_hq) for mono files.
    np.testing.assert_array_equal(wave, librosa.load(path, sr=16000)[0])
    waves.append(audio.crop_or_pad(wave, EIGHT_SECONDS))
  batch = np.asarray(audio.log_mel(np.stack(waves)))
  for wave, ours in zip(waves, batch):
    np.testing.assert_allclose(ours, opera_log_mel(wave), rtol=0, atol=TOL)


# ----------------------------------------------------------------------------
# load_audio and check_waveform.
# ----------------------------------------------------------------------------


def _sine(freq=440.0, seconds=1.0, sr=16000, amp=0.5):
  return (amp * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def test_load_audio_reads_mono_16k(tmp_path):
  path = tmp_path / "ok.wav"
  wave = _sine()
  soundfile.write(path, wave, 16000, subtype="FLOAT")
  loaded = audio.load_audio(path)
  assert loaded.dtype == np.float32
  np.testing.assert_array_equal(loaded, wave)


def test_load_audio_missing_file(tmp_path):
  _assert_bad_audio(tmp_path / "nope.wav", "file not found")
  _assert_bad_audio(tmp_path, "directory")


def test_load_audio_corrupt_file(tmp_path):
  path = tmp_path / "noise.wav"
  path.write_bytes(np.random.default_rng(0).bytes(4000))
  message = _assert_bad_audio(path, "unreadable or corrupt")
  assert "Format not recognised" in message  # The underlying soundfile error is kept.
  assert isinstance(pytest.raises(DataError, audio.load_audio, path).value, ValueError)


def test_load_audio_truncated_files(tmp_path):
  """Decision: a cut file loads its intact prefix (never garbage); no data is an error."""
  full_path = tmp_path / "full.wav"
  wave = _sine()
  soundfile.write(full_path, wave, 16000, subtype="PCM_16")
  data = full_path.read_bytes()
  header = 44  # Canonical PCM WAV header written by libsndfile.

  header_only = tmp_path / "header_only.wav"
  header_only.write_bytes(data[:header])
  _assert_bad_audio(header_only, "no samples")

  cut_header = tmp_path / "cut_header.wav"
  cut_header.write_bytes(data[:20])
  _assert_bad_audio(cut_header, "unreadable or corrupt")

  # Cut mid-data (and mid-sample): libsndfile decodes the whole samples present.
  half = tmp_path / "half.wav"
  half.write_bytes(data[:header + 16001])
  loaded = audio.load_audio(half)
  full = audio.load_audio(full_path)
  assert loaded.shape == (8000,)
  np.testing.assert_array_equal(loaded, full[:8000])


def test_load_audio_empty_silent_nan(tmp_path):
  empty = tmp_path / "empty.wav"
  soundfile.write(empty, np.zeros(0, np.float32), 16000)
  _assert_bad_audio(empty, "no samples")

  silent = tmp_path / "silent.wav"
  soundfile.write(silent, np.zeros(16000, np.float32), 16000, subtype="PCM_16")
  _assert_bad_audio(silent, "silent")

  for bad in (np.nan, np.inf):
    wave = _sine()
    wave[123] = bad
    path = tmp_path / f"{bad}.wav"
    soundfile.write(path, wave, 16000, subtype="FLOAT")
    message = _assert_bad_audio(path, "NaN or infinite")
    assert "index 123" in message


def test_load_audio_stereo(tmp_path):
  path = tmp_path / "stereo.wav"
  left, right = _sine(440), _sine(660, amp=0.25)
  soundfile.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
  _assert_bad_audio(path, "2 channels; expected mono (pass downmix=True")
  mixed = audio.load_audio(path, downmix=True)
  np.testing.assert_allclose(mixed, (left + right) / 2, rtol=0, atol=1e-7)


def test_load_audio_resamples_8k(tmp_path):
  path = tmp_path / "8k.wav"
  soundfile.write(path, _sine(1000.0, seconds=1.0, sr=8000), 8000, subtype="PCM_16")
  loaded = audio.load_audio(path)
  assert loaded.shape == (16000,)
  spectrum = np.abs(np.fft.rfft(loaded * np.hanning(loaded.size)))
  peak_hz = np.argmax(spectrum) * 16000 / loaded.size
  assert peak_hz == pytest.approx(1000.0, abs=1.0)
  assert np.abs(loaded).max() == pytest.approx(0.5, abs=0.02)
  assert audio.load_audio(path, sample_rate=8000).shape == (8000,)


def test_load_audio_falls_back_to_audioread(tmp_path, monkeypatch):
  path = tmp_path / "pcm.wav"
  soundfile.write(path, _sine(), 16000, subtype="PCM_16")
  expected = audio.load_audio(path)

  def refuse(*args, **kwargs):
    raise soundfile.LibsndfileError(0, "pretend libsndfile cannot read this")

  monkeypatch.setattr(soundfile, "read", refuse)
  np.testing.assert_array_equal(audio.load_audio(path), expected)


def test_check_waveform():
  wave = audio.check_waveform(np.linspace(-1, 1, 10), "ex1")
  assert wave.dtype == np.float32
  cases = [
      (np.zeros((2, 10), np.float32), "expected 1-D"),
      (np.ones(10, np.int16), "floating point"),
      (np.zeros(0, np.float32), "0 samples"),
      (np.array([0.5, np.nan], np.float32), "NaN"),
      (np.array([0.5, 1e300]), "NaN or infinite"),  # Overflows float32.
      (np.full(10, 1e-8, np.float32), "silent"),
  ]
  for bad, fragment in cases:
    with pytest.raises(BadAudioError, match="^ex2: ") as info:
      audio.check_waveform(bad, "ex2")
    assert fragment in str(info.value)
  with pytest.raises(BadAudioError, match="need at least 5"):
    audio.check_waveform(np.ones(4, np.float32), "ex3", min_samples=5)


# ----------------------------------------------------------------------------
# Cropping and frame arithmetic.
# ----------------------------------------------------------------------------


def test_crop_or_pad():
  wave = np.arange(10, dtype=np.float32)
  np.testing.assert_array_equal(audio.crop_or_pad(wave, 4), [3, 4, 5, 6])
  np.testing.assert_array_equal(audio.crop_or_pad(wave, 4, offset=6), [6, 7, 8, 9])
  np.testing.assert_array_equal(audio.crop_or_pad(wave, 10), wave)
  padded = audio.crop_or_pad(wave, 13)
  np.testing.assert_array_equal(padded, list(range(10)) + [0, 0, 0])
  assert padded.dtype == np.float32
  starts = {int(audio.crop_or_pad(wave, 4, rng=np.random.default_rng(s))[0]) for s in range(50)}
  assert starts == set(range(7))  # Every valid offset, none outside.
  first = audio.crop_or_pad(wave, 4, rng=np.random.default_rng(7))
  np.testing.assert_array_equal(first, audio.crop_or_pad(wave, 4, rng=np.random.default_rng(7)))
  with pytest.raises(ValueError, match="out of range"):
    audio.crop_or_pad(wave, 4, offset=7)
  with pytest.raises(ValueError, match="not both"):
    audio.crop_or_pad(wave, 4, offset=0, rng=np.random.default_rng(0))


def test_num_frames():
  assert audio.num_frames(audio.num_samples_for_frames(256)) == 256
  assert audio.num_frames(audio.num_samples_for_frames(256) - 1) == 255
  assert audio.num_frames(EIGHT_SECONDS) == 251
  for length in (1024, 1535, 1536, 1537, EIGHT_SECONDS):
    spec = librosa.feature.melspectrogram(
        y=np.ones(length, np.float32), sr=16000, n_fft=1024, hop_length=512)
    assert audio.num_frames(length) == spec.shape[1]
  assert audio.num_frames(1000, hop=160) == 7
  with pytest.raises(ValueError):
    audio.num_samples_for_frames(0)
