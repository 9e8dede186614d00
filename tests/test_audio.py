"""Tests for acula_jax.audio: log-mel against librosa (OPERA's reference), fbank against Kaldi."""

import jax
import librosa
import numpy as np
import pytest
import soundfile

from acula_jax import audio
from acula_jax.audio import io as audio_io
from acula_jax.audio import frontends
from acula_jax import models
from acula_jax.errors import BadAudioError, DataError

OPERA = dict(sample_rate=16000, n_fft=1024, n_mels=64, fmin=50.0, fmax=8000.0)
EIGHT_SECONDS = 8 * audio.SAMPLE_RATE
TOL = 1e-4  # On the [0, 1] scale: 0.008 dB of the 80 dB range.


def opera_log_mel(wave):
  """OPERA's front end computed with librosa: the reference for `frontends.log_mel`."""
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
    audio_io.load_audio(path, **kwargs)
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
  ours = frontends.mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax)
  ref = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax).T
  assert ours.shape == (1 + n_fft // 2, n_mels)
  assert ours.dtype == np.float32
  np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("length", [1024, 16000, 40001, EIGHT_SECONDS])
def test_log_mel_matches_librosa_on_noise(length):
  wave = 0.1 * np.random.default_rng(length).standard_normal(length).astype(np.float32)
  ours = np.asarray(frontends.log_mel(wave))
  ref = opera_log_mel(wave)
  assert ours.shape == ref.shape == (frontends.num_frames(length), 64)
  assert ours.dtype == np.float32
  np.testing.assert_allclose(ours, ref, rtol=0, atol=TOL)


def test_log_mel_matches_librosa_on_structured_signal():
  wave = _structured_signal()
  ours = np.asarray(frontends.log_mel(wave))
  ref = opera_log_mel(wave)
  # The top_db floor must actually be reached, or the test misses the clipping.
  assert (ref == 0).mean() > 0.01
  np.testing.assert_allclose(ours, ref, rtol=0, atol=TOL)


def test_log_mel_batch_equals_per_example_and_vmap():
  rng = np.random.default_rng(1)
  waves = rng.standard_normal((3, EIGHT_SECONDS)).astype(np.float32)
  waves *= np.array([[1.0], [1e-3], [30.0]], np.float32)  # Per-clip scaling must not leak.
  waves[1] = _structured_signal()
  batch = np.asarray(frontends.log_mel(waves))
  assert batch.shape == (3, 251, 64)
  for wave, row in zip(waves, batch):
    np.testing.assert_allclose(row, np.asarray(frontends.log_mel(wave)), rtol=0, atol=1e-6)
  mapped = np.asarray(jax.vmap(frontends.log_mel)(waves))
  np.testing.assert_allclose(mapped, batch, rtol=0, atol=1e-6)
  np.testing.assert_allclose(batch[1], opera_log_mel(waves[1]), rtol=0, atol=TOL)


def test_log_mel_constant_clip_is_zero_not_nan():
  out = np.asarray(frontends.log_mel(np.zeros((2, 4096), np.float32)))
  assert out.shape == (2, 9, 64)
  assert np.all(out == 0)


def test_log_mel_range_and_other_settings():
  wave = _structured_signal(seconds=2.0)
  ours = np.asarray(frontends.log_mel(wave, n_fft=400, hop=160, n_mels=40, fmin=0.0, fmax=None))
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
    wave = audio_io.load_audio(path)
    assert soundfile.info(str(path)).samplerate == 2000  # Resampled 8x on load.
    # load_audio is librosa.load (whose default res_type is soxr_hq) for mono files.
    np.testing.assert_array_equal(wave, librosa.load(path, sr=16000)[0])
    waves.append(audio_io.crop_or_pad(wave, EIGHT_SECONDS))
  batch = np.asarray(frontends.log_mel(np.stack(waves)))
  for wave, ours in zip(waves, batch):
    np.testing.assert_allclose(ours, opera_log_mel(wave), rtol=0, atol=TOL)


# ----------------------------------------------------------------------------
# Kaldi fbank and AudioMAE's input, against kaldi-native-fbank (k2-fsa's C++ port
# of Kaldi's feature code; torchaudio's kaldi.fbank, what AudioMAE calls, does not
# install beside the CPU torch here).
# ----------------------------------------------------------------------------

# Entries below this log energy (4.5e-5) sit near Kaldi's floor log(eps) = -15.94, where float32
# FFT rounding (about eps * |frame|) is the whole value: there, kaldi-native-fbank and torchaudio
# differ from each other by up to 1.4e-2 on the chirp, so no float32 implementation can promise more.
NEAR_FLOOR = -10.0
FBANK_TOL = 1e-3
FLOOR_TOL = 5e-2
# (window, mel bins, frame length ms, frame shift ms): AudioMAE's window with as many bins as a
# 25 ms frame allows (Kaldi refuses 128 there, see below), Kaldi's defaults, and 128 bins on 50 ms.
KALDI_SETTINGS = [("hanning", 80, 25.0, 10.0), ("povey", 23, 25.0, 10.0), ("hamming", 128, 50.0, 20.0)]


def knf_fbank(wave, window_type="hanning", num_mel_bins=80, frame_length_ms=25.0, frame_shift_ms=10.0):
  """kaldi-native-fbank's log fbank, AudioMAE's torchaudio options otherwise (no dither or energy)."""
  import kaldi_native_fbank as knf  # pylint: disable=g-import-not-at-top  (test extra)
  opts = knf.FbankOptions()
  opts.frame_opts.samp_freq = 16000
  opts.frame_opts.dither = 0.0
  opts.frame_opts.window_type = window_type
  opts.frame_opts.frame_length_ms = frame_length_ms
  opts.frame_opts.frame_shift_ms = frame_shift_ms
  opts.frame_opts.snip_edges = True
  opts.mel_opts.num_bins = num_mel_bins
  opts.use_energy = False
  opts.htk_compat = True
  fbank = knf.OnlineFbank(opts)
  fbank.accept_waveform(16000, np.asarray(wave, np.float32).tolist())
  fbank.input_finished()
  return np.stack([fbank.get_frame(i) for i in range(fbank.num_frames_ready)])


def _assert_log_energies_close(ours, ref):
  assert ours.shape == ref.shape and ours.dtype == np.float32
  diff = np.abs(ours - ref)
  above = ref > NEAR_FLOOR
  assert above.mean() > 0.1  # the tight bound covers a real share of the spectrogram
  assert diff[above].max() <= FBANK_TOL, diff[above].max()
  assert diff.max() <= FLOOR_TOL, diff.max()


def _physionet_16k(shared_data, name="a0001"):
  path = shared_data / "physionet2016" / "training-a" / f"{name}.wav"
  if not path.is_file():
    pytest.skip(f"no PhysioNet 2016 file at {path}")
  return librosa.load(path, sr=16000)[0]


def _fbank_signals(shared_data):
  rng = np.random.default_rng(0)
  return {
      "noise": (0.1 * rng.standard_normal(160000)).astype(np.float32),
      "chirp": (0.5 * librosa.chirp(fmin=30, fmax=7900, sr=16000, duration=10.0)).astype(np.float32),
      "physionet": _physionet_16k(shared_data),  # 2 kHz heart sounds, resampled with librosa (soxr_hq)
  }


@pytest.mark.parametrize("window_type,bins,length_ms,shift_ms", KALDI_SETTINGS)
def test_kaldi_mel_banks_match_kaldi_native_fbank(window_type, bins, length_ms, shift_ms):
  import kaldi_native_fbank as knf  # pylint: disable=g-import-not-at-top
  frame_opts = knf.FrameExtractionOptions()
  frame_opts.samp_freq = 16000
  frame_opts.frame_length_ms = length_ms
  frame_opts.window_type = window_type
  ref = np.asarray(knf.MelBanks(knf.MelBanksOptions(num_bins=bins), frame_opts).get_matrix()).T
  length, _ = frontends.kaldi_frame_sizes(16000, length_ms, shift_ms)
  ours = frontends.kaldi_mel_banks(bins, 1 << (length - 1).bit_length())
  assert ours.shape == ref.shape
  np.testing.assert_allclose(ours, ref, rtol=0, atol=5e-5)  # Kaldi computes the triangles in float32


@pytest.mark.parametrize("window_type,bins,length_ms,shift_ms", KALDI_SETTINGS)
def test_kaldi_fbank_matches_kaldi_native_fbank(shared_data, window_type, bins, length_ms, shift_ms):
  signals = _fbank_signals(shared_data)
  kwargs = dict(window_type=window_type, num_mel_bins=bins, frame_length_ms=length_ms,
                frame_shift_ms=shift_ms)
  for name, wave in signals.items():
    ours = np.asarray(frontends.kaldi_fbank(wave, **kwargs))
    assert ours.shape[0] == frontends.kaldi_num_frames(wave.size, 16000, length_ms, shift_ms), name
    _assert_log_energies_close(ours, knf_fbank(wave, **kwargs))


def test_kaldi_fbank_batch_equals_per_example_and_vmap():
  rng = np.random.default_rng(3)
  waves = (rng.standard_normal((3, 16000)) * np.array([[1.0], [1e-3], [30.0]])).astype(np.float32)
  batch = np.asarray(frontends.kaldi_fbank(waves, num_mel_bins=40))
  assert batch.shape == (3, 98, 40)
  for wave, row in zip(waves, batch):
    np.testing.assert_allclose(row, np.asarray(frontends.kaldi_fbank(wave, num_mel_bins=40)), rtol=0, atol=1e-5)
  mapped = np.asarray(jax.vmap(lambda w: frontends.kaldi_fbank(w, num_mel_bins=40))(waves))
  np.testing.assert_allclose(mapped, batch, rtol=0, atol=1e-5)
  # Silence is the floor, not -inf or NaN.
  np.testing.assert_array_equal(np.asarray(frontends.kaldi_fbank(np.zeros(800, np.float32))),
                                np.full((3, 23), np.log(np.finfo(np.float32).eps), np.float32))
  with pytest.raises(ValueError, match="shorter than one 400-sample"):
    frontends.kaldi_fbank(np.ones(399, np.float32))
  with pytest.raises(ValueError, match="window_type"):
    frontends.kaldi_fbank(np.ones(800, np.float32), window_type="kaiser")


@pytest.mark.parametrize("seconds,target_frames", [(0.5, 64), (3.0, 64)])  # pads; crops
def test_audiomae_fbank_is_normalised_kaldi_fbank(shared_data, seconds, target_frames):
  """AudioMAE's dataset steps (mean removal, fbank, zero-pad or crop, normalise), reference fbanks."""
  wave = _physionet_16k(shared_data)[:int(seconds * 16000)] + np.float32(0.01)  # a DC offset to remove
  ours = np.asarray(frontends.audiomae_fbank(wave, num_mel_bins=64, target_frames=target_frames))
  ref = knf_fbank(wave - wave.mean(), num_mel_bins=64)[:target_frames]
  ref = np.pad(ref, ((0, target_frames - len(ref)), (0, 0)))
  ref = (ref - frontends.AUDIOSET_MEAN) / (2 * frontends.AUDIOSET_STD)
  assert ours.shape == (target_frames, 64)
  np.testing.assert_allclose(ours, ref, rtol=0, atol=FBANK_TOL / (2 * frontends.AUDIOSET_STD))
  if seconds < 1:  # padded frames read AudioMAE's normalised zero
    np.testing.assert_allclose(ours[-5:], -frontends.AUDIOSET_MEAN / (2 * frontends.AUDIOSET_STD), atol=1e-6)


def test_audiomae_frontend_shape_and_empty_mel_bin():
  """The released setting: 10 s -> 998 frames padded to 1024 x 128. With 25 ms frames (512-point
  FFT) the fourth of 128 mel triangles covers no FFT bin: Kaldi refuses that (kaldi-native-fbank
  too), torchaudio returns the floor log(eps) there, and so do we."""
  wave = (0.1 * np.random.default_rng(5).standard_normal(160000)).astype(np.float32)
  spec = np.asarray(frontends.spectrogram(wave, **frontends.AUDIOMAE_FBANK))
  assert spec.shape == (1024, 128) and spec.dtype == np.float32
  np.testing.assert_array_equal(spec, np.asarray(frontends.audiomae_fbank(wave)))
  floor = (np.log(np.finfo(np.float32).eps) - frontends.AUDIOSET_MEAN) / (2 * frontends.AUDIOSET_STD)
  np.testing.assert_allclose(spec[:998, 3], floor, atol=1e-6)
  assert np.all(spec[:998].std(axis=0)[np.arange(128) != 3] > 0.01)
  np.testing.assert_allclose(spec[998:], -frontends.AUDIOSET_MEAN / (2 * frontends.AUDIOSET_STD), atol=1e-6)
  assert np.flatnonzero(frontends.kaldi_mel_banks(128, 512).max(axis=0) == 0).tolist() == [3]


def test_frontends_by_family_and_window_samples():
  wave = _structured_signal(seconds=2.0)
  np.testing.assert_array_equal(np.asarray(frontends.spectrogram(wave, **frontends.OPERA_LOG_MEL)),
                                np.asarray(frontends.log_mel(wave)))
  opera = dict(frontends.OPERA_LOG_MEL, n_mels=32)
  front_end = lambda name: models.get_model(name).FRONTEND
  assert frontends.frontend_for(front_end("opera_ce"), opera) == opera
  assert frontends.frontend_for(front_end("opera_gt"), frontends.AUDIOMAE_FBANK) == frontends.OPERA_LOG_MEL
  assert frontends.frontend_for(front_end("audiomae"), opera) == frontends.AUDIOMAE_FBANK
  tiny = frontends.frontend_for(front_end("audiomae"), opera, spec_shape=(64, 32))
  assert (tiny["target_frames"], tiny["num_mel_bins"]) == (64, 32)
  assert frontends.frontend_for("audiomae_fbank", tiny) == tiny
  for config, frames in ((frontends.OPERA_LOG_MEL, 256), (frontends.AUDIOMAE_FBANK, 1024), (tiny, 64)):
    n = frontends.window_samples(frames, config)
    if frontends.frontend_name(config) == "log_mel":
      assert frontends.num_frames(n) == frames and frontends.num_frames(n - 1) == frames - 1
    else:
      assert frontends.kaldi_num_frames(n) == frames and frontends.kaldi_num_frames(n - 1) == frames - 1
      assert np.asarray(frontends.kaldi_fbank(np.ones(n, np.float32))).shape[0] == frames
  assert frontends.window_samples(1024, frontends.AUDIOMAE_FBANK) == 164080
  frontends.check_frontend("audiomae", "audiomae_fbank", tiny, spec_shape=(64, 32))
  with pytest.raises(ValueError, match="'audiomae' takes the 'audiomae_fbank' front end"):
    frontends.check_frontend("audiomae", "audiomae_fbank", opera)
  with pytest.raises(ValueError, match="takes the 'log_mel' front end"):
    frontends.check_frontend("opera_gt", "log_mel", tiny)
  with pytest.raises(ValueError, match="spec_shape is"):
    frontends.check_frontend("audiomae", "audiomae_fbank", tiny, spec_shape=(1024, 128))
  with pytest.raises(ValueError, match="unknown front end"):
    frontends.spectrogram(wave, frontend="mfcc")


# ----------------------------------------------------------------------------
# load_audio and check_waveform.
# ----------------------------------------------------------------------------


def _sine(freq=440.0, seconds=1.0, sr=16000, amp=0.5):
  return (amp * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def test_load_audio_reads_mono_16k(tmp_path):
  path = tmp_path / "ok.wav"
  wave = _sine()
  soundfile.write(path, wave, 16000, subtype="FLOAT")
  loaded = audio_io.load_audio(path)
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
  assert isinstance(pytest.raises(DataError, audio_io.load_audio, path).value, ValueError)


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
  loaded = audio_io.load_audio(half)
  full = audio_io.load_audio(full_path)
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
  _assert_bad_audio(path, "2 channels; expected mono (acula_jax.data.prepare --option=downmix=true")
  mixed = audio_io.load_audio(path, downmix=True)
  np.testing.assert_allclose(mixed, (left + right) / 2, rtol=0, atol=1e-7)


def test_load_audio_resamples_8k(tmp_path):
  path = tmp_path / "8k.wav"
  soundfile.write(path, _sine(1000.0, seconds=1.0, sr=8000), 8000, subtype="PCM_16")
  loaded = audio_io.load_audio(path)
  assert loaded.shape == (16000,)
  spectrum = np.abs(np.fft.rfft(loaded * np.hanning(loaded.size)))
  peak_hz = np.argmax(spectrum) * 16000 / loaded.size
  assert peak_hz == pytest.approx(1000.0, abs=1.0)
  assert np.abs(loaded).max() == pytest.approx(0.5, abs=0.02)
  assert audio_io.load_audio(path, sample_rate=8000).shape == (8000,)


def test_load_audio_falls_back_to_audioread(tmp_path, monkeypatch):
  path = tmp_path / "pcm.wav"
  soundfile.write(path, _sine(), 16000, subtype="PCM_16")
  expected = audio_io.load_audio(path)

  def refuse(*args, **kwargs):
    raise soundfile.LibsndfileError(0, "pretend libsndfile cannot read this")

  monkeypatch.setattr(soundfile, "read", refuse)
  np.testing.assert_array_equal(audio_io.load_audio(path), expected)


def test_check_waveform():
  wave = audio_io.check_waveform(np.linspace(-1, 1, 10), "ex1")
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
      audio_io.check_waveform(bad, "ex2")
    assert fragment in str(info.value)
  with pytest.raises(BadAudioError, match="need at least 5"):
    audio_io.check_waveform(np.ones(4, np.float32), "ex3", min_samples=5)


# ----------------------------------------------------------------------------
# Cropping and frame arithmetic.
# ----------------------------------------------------------------------------


def test_crop_or_pad():
  wave = np.arange(10, dtype=np.float32)
  np.testing.assert_array_equal(audio_io.crop_or_pad(wave, 4), [3, 4, 5, 6])
  np.testing.assert_array_equal(audio_io.crop_or_pad(wave, 4, offset=6), [6, 7, 8, 9])
  np.testing.assert_array_equal(audio_io.crop_or_pad(wave, 10), wave)
  padded = audio_io.crop_or_pad(wave, 13)
  np.testing.assert_array_equal(padded, list(range(10)) + [0, 0, 0])
  assert padded.dtype == np.float32
  starts = {int(audio_io.crop_or_pad(wave, 4, rng=np.random.default_rng(s))[0]) for s in range(50)}
  assert starts == set(range(7))  # Every valid offset, none outside.
  first = audio_io.crop_or_pad(wave, 4, rng=np.random.default_rng(7))
  np.testing.assert_array_equal(first, audio_io.crop_or_pad(wave, 4, rng=np.random.default_rng(7)))
  with pytest.raises(ValueError, match="out of range"):
    audio_io.crop_or_pad(wave, 4, offset=7)
  with pytest.raises(ValueError, match="not both"):
    audio_io.crop_or_pad(wave, 4, offset=0, rng=np.random.default_rng(0))


def test_num_frames():
  assert frontends.num_frames(frontends.num_samples_for_frames(256)) == 256
  assert frontends.num_frames(frontends.num_samples_for_frames(256) - 1) == 255
  assert frontends.num_frames(EIGHT_SECONDS) == 251
  for length in (1024, 1535, 1536, 1537, EIGHT_SECONDS):
    spec = librosa.feature.melspectrogram(
        y=np.ones(length, np.float32), sr=16000, n_fft=1024, hop_length=512)
    assert frontends.num_frames(length) == spec.shape[1]
  assert frontends.num_frames(1000, hop=160) == 7
  with pytest.raises(ValueError):
    frontends.num_samples_for_frames(0)
