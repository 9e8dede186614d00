"""Feature baselines: openSMILE functionals as the package computes them, log-mel statistics + duration,
and their place in the evaluation's feature cache."""
import numpy as np
import pytest

from acula_jax import audio
from acula_jax.audio import frontends
from acula_jax.evaluators import baselines
from acula_jax.evaluators import features as features_lib
from acula_jax.data import records
from acula_jax.data import synthetic

import opensmile

MEL = {"sample_rate": 16000, "n_fft": 1024, "hop": 512, "n_mels": 64, "fmin": 50.0, "fmax": 8000.0,
       "top_db": 80.0}
AUDIO = dict(MEL, frontend="log_mel")


def _wave(seconds=1.5, seed=0):
  rng = np.random.default_rng(seed)
  t = np.arange(int(seconds * audio.SAMPLE_RATE)) / audio.SAMPLE_RATE
  return (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 1.3 * t))
          + 0.02 * rng.normal(size=t.size)).astype(np.float32)


@pytest.mark.parametrize("name,feature_set,dim", [("egemaps", "eGeMAPSv02", 88), ("compare", "ComParE_2016", 6373)])
def test_opensmile_functionals_match_the_package(name, feature_set, dim):
  featurizer = baselines.build([name], AUDIO, 4096)[baselines.NAMES[name]]
  wave = _wave()
  got = featurizer.function()(wave)
  smile = opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, feature_set),
                          feature_level=opensmile.FeatureLevel.Functionals)
  expected = np.nan_to_num(smile.process_signal(wave, 16000).to_numpy(np.float32)[0])
  assert got.shape == (dim,) and featurizer.kind == "recording"
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  assert featurizer.key == f"opensmile-{feature_set}-{opensmile.__version__}"


def test_logmel_statistics_and_duration():
  window = frontends.num_samples_for_frames(32)
  featurizer = baselines.logmel(AUDIO, window, batch_size=4)
  wave = _wave(2.6)
  got = features_lib.featurize_waves([wave], featurizer)[0]
  chunks = features_lib.chunk(wave, window)
  spec = np.asarray(frontends.log_mel(np.stack(chunks), **MEL))
  expected = np.concatenate([spec.mean(1), spec.std(1)], axis=1).mean(0)
  assert len(chunks) == 3 and got.shape == (2 * 64 + 1,)
  np.testing.assert_allclose(got[:-1], expected, rtol=1e-5, atol=1e-6)
  assert got[-1] == pytest.approx(2.6, abs=1e-4)   # the duration column, in seconds
  with pytest.raises(ValueError, match="unknown baseline"):
    baselines.build(["vggish"], AUDIO, window)


def test_baselines_are_cached_like_encoders(tmp_path, monkeypatch):
  examples = [synthetic.generate_example(i, seed=0, duration_s=1.0) for i in range(6)]
  records.write_audio_records(tmp_path / "records", examples, dataset="synthetic")
  featurizers = list(baselines.build(["egemaps", "logmel"], AUDIO, frontends.num_samples_for_frames(32)).values())
  store = features_lib.RecordsStore(tmp_path / "records", tmp_path / "cache")
  index, features = store.load(featurizers)
  assert len(index) == 6 and features[featurizers[0].key].shape == (6, 88)
  assert features[featurizers[1].key].shape == (6, 129)
  by_id = {e["id"]: e for e in examples}
  first = by_id[index[0]["id"]]["audio"]
  np.testing.assert_allclose(features[featurizers[0].key][0], featurizers[0].function()(first), rtol=1e-6)

  monkeypatch.setattr(features_lib, "_extract_split", lambda *a, **k: pytest.fail("extracted again"))
  again_index, again = features_lib.RecordsStore(tmp_path / "records", tmp_path / "cache").load(featurizers)
  assert again_index == index
  for f in featurizers:
    np.testing.assert_array_equal(again[f.key], features[f.key])


def test_whole_recording_features_on_a_worker_thread_keep_rows_and_errors():
  """openSMILE runs beside the encoders on one worker thread: rows stay in order, memory bounded."""
  import threading
  threads = set()

  def fn(wave):
    threads.add(threading.get_ident())
    if wave[0] < 0:
      raise ValueError("bad recording")
    return np.array([wave[0], len(wave)], np.float32)

  featurizer = baselines.Featurizer("f", "f", "recording", fn)
  waves = [np.full(10 + i, float(i), np.float32) for i in range(3 * features_lib._RecordingAccumulator.MAX_PENDING)]
  got = features_lib.featurize_waves(waves, featurizer)
  np.testing.assert_array_equal(got, [[i, 10 + i] for i in range(len(waves))])
  assert len(threads) == 1 and threading.get_ident() not in threads
  with pytest.raises(ValueError, match="bad recording"):
    features_lib.featurize_waves(waves[:5] + [np.full(3, -1.0, np.float32)], featurizer)
