"""Tests of the synthetic demo corpus: determinism, layout, label coherence and learnability."""

import collections
import os
import subprocess
import sys

import librosa
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from acula_jax.data import synthetic
from acula_jax.data.synthetic import DEMO_TASKS, generate_example

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def corpus():
  """600 short clips: labels and splits do not depend on the duration, and 1 s clips are cheap."""
  return [generate_example(i, 0, duration_s=1.0) for i in range(600)]


def test_same_index_and_seed_give_identical_clips():
  a, b = generate_example(7, 3), generate_example(7, 3)
  np.testing.assert_array_equal(a["audio"], b["audio"])
  assert {k: v for k, v in a.items() if k != "audio"} == {k: v for k, v in b.items() if k != "audio"}


def test_other_seed_or_index_gives_other_clips():
  base = generate_example(7, 3, duration_s=2.0)["audio"]
  assert not np.array_equal(base, generate_example(7, 4, duration_s=2.0)["audio"])
  assert not np.array_equal(base, generate_example(8, 3, duration_s=2.0)["audio"])


def test_corpus_iterates_examples():
  got = list(synthetic.generate_corpus(3, 5, duration_s=0.5, start=10))
  assert [e["id"] for e in got] == ["syn-000010", "syn-000011", "syn-000012"]
  np.testing.assert_array_equal(got[1]["audio"], generate_example(11, 5, duration_s=0.5)["audio"])


def test_shapes_dtypes_and_range():
  for index in range(16):
    ex = generate_example(index, 0)
    audio = ex["audio"]
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert ex["num_samples"] == audio.shape[0] and ex["sample_rate"] == 16000
    assert 6.0 * 16000 <= audio.shape[0] <= 10.0 * 16000
    assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.0
    assert np.abs(audio).max() > 0.01  # Never silent.
    assert ex["id"] == f"syn-{index:06d}" and ex["dataset"] == "synthetic"
    assert ex["subject_id"] and ex["split"] in synthetic.SPLITS
  assert generate_example(0, 0, duration_s=2.5)["audio"].shape == (40000,)
  ex = generate_example(1, 0, sample_rate=8000, duration_s=2.0)
  assert ex["audio"].shape == (16000,) and ex["sample_rate"] == 8000 and np.isfinite(ex["audio"]).all()


def test_rejects_negative_index_or_seed():
  with pytest.raises(ValueError):
    generate_example(-1, 0)
  with pytest.raises(ValueError):
    generate_example(0, -1)


def test_splits_are_70_15_15_and_subject_disjoint(corpus):
  counts = collections.Counter(e["split"] for e in corpus)
  assert counts == {"train": 420, "valid": 90, "test": 90}  # 300 subjects = 15 blocks of 14/3/3.
  splits_of = collections.defaultdict(set)
  for e in corpus:
    splits_of[e["subject_id"]].add(e["split"])
  assert all(len(s) == 1 for s in splits_of.values())
  # Splits depend on the seed.
  other = [generate_example(i, 1, duration_s=0.2)["split"] for i in range(40)]
  assert other != [e["split"] for e in corpus[:40]]


def test_subject_facts_are_shared_by_its_clips(corpus):
  by_subject = collections.defaultdict(list)
  for e in corpus:
    by_subject[e["subject_id"]].append(e)
  assert {len(v) for v in by_subject.values()} == {synthetic.CLIPS_PER_SUBJECT}
  for clips in by_subject.values():
    a, b = clips
    assert a["labels"] == b["labels"]
    for key in ("sound_type", "age", "sex"):
      assert a["metadata"][key] == b["metadata"][key]
    assert a["metadata"]["location"] != b["metadata"]["location"]


def _check_heart(labels, meta):
  dx = labels["heart_diagnosis"]
  assert dx in synthetic.HEART_DIAGNOSES and meta["location"] in synthetic.HEART_LOCATIONS
  assert 45 <= meta["heart_rate"] <= 130
  assert labels["murmur"] == meta["murmur"]
  has_murmur = dx in ("aortic_stenosis", "mitral_regurgitation", "aortic_regurgitation", "mitral_stenosis")
  assert labels["murmur"] == ("present" if has_murmur else "absent")
  if not has_murmur:
    assert "murmur_timing" not in labels and not any(k.startswith("murmur_") for k in meta)
    if dx == "heart_failure":
      assert "S3" in meta["extra_sounds"]
    return
  assert labels["murmur_timing"] == meta["murmur_timing"]
  assert meta["murmur_phase"].endswith(meta["murmur_timing"])
  assert 1 <= meta["murmur_grade"] <= 6
  expected = {"aortic_stenosis": ("systolic", "crescendo-decrescendo", "aortic"),
              "mitral_regurgitation": ("systolic", "plateau", "mitral"),
              "aortic_regurgitation": ("diastolic", "decrescendo", "aortic"),
              "mitral_stenosis": ("diastolic", None, "mitral")}[dx]
  assert meta["murmur_timing"] == expected[0] and meta["murmur_most_audible"] == expected[2]
  assert expected[1] in (None, meta["murmur_shape"])
  if dx == "mitral_stenosis":
    assert meta["murmur_pitch"] == "low"


def _check_lung(labels, meta):
  dx = labels["lung_diagnosis"]
  assert dx in synthetic.LUNG_DIAGNOSES and meta["location"] in synthetic.LUNG_LOCATIONS
  assert 10 <= meta["respiratory_rate"] <= 32
  crackles, wheezes = meta["crackles"] == "present", meta["wheezes"] == "present"
  sound = {(False, False): "normal", (True, False): "crackles", (False, True): "wheezes",
           (True, True): "both"}[(crackles, wheezes)]
  assert labels["lung_sound"] == sound
  assert sound == {"healthy": "normal", "pneumonia": "crackles", "pulmonary_fibrosis": "crackles",
                   "asthma": "wheezes", "bronchitis": "wheezes", "copd": "both"}[dx]
  assert ("crackle_type" in meta) == crackles and ("wheeze_type" in meta) == wheezes
  if dx == "pulmonary_fibrosis":
    assert meta["crackle_type"] == "fine" and meta["crackle_timing"] == "late-inspiratory"
  if dx == "asthma":
    assert meta["wheeze_type"] == "polyphonic" and meta["wheeze_pitch"] == "high"
  if dx == "bronchitis":
    assert meta["wheeze_pitch"] == "low"


def test_labels_are_coherent_with_metadata(corpus):
  for e in corpus:
    meta, labels = e["metadata"], e["labels"]
    assert isinstance(meta["age"], int) and 0 <= meta["age"] <= 100
    assert meta["sex"] in ("female", "male") and meta["device"] in synthetic.DEVICES
    if meta["sound_type"] == "heart":
      _check_heart(labels, meta)
    else:
      assert meta["sound_type"] == "lung"
      _check_lung(labels, meta)


def test_every_task_has_every_class_in_train_and_test(corpus):
  for task in DEMO_TASKS:
    for split in ("train", "test"):
      seen = collections.Counter(e["labels"][task.label_key] for e in corpus
                                 if e["split"] == split and task.applies_to(e))
      assert set(seen) == set(task.classes), (task.name, split, seen)


def test_class_balance(corpus):
  # Balanced up to the incomplete slot cycle at the end of each split.
  sound_types = collections.Counter(e["metadata"]["sound_type"] for e in corpus)
  assert abs(sound_types["heart"] - 300) <= 16, sound_types
  heart = [e for e in corpus if DEMO_TASKS[0].applies_to(e)]
  assert abs(np.mean([e["labels"]["murmur"] == "present" for e in heart]) - 0.5) < 0.05
  lung = collections.Counter(e["labels"]["lung_sound"] for e in corpus if DEMO_TASKS[2].applies_to(e))
  assert all(abs(n / sound_types["lung"] - 0.25) < 0.05 for n in lung.values()), lung


def _cv_auroc(features, y, groups):
  """Subject-grouped 5-fold AUROC (one-vs-rest macro for several classes) of a logistic regression."""
  model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
  prob = cross_val_predict(model, features, y, cv=GroupKFold(5), groups=groups, method="predict_proba")
  if prob.shape[1] == 2:
    return roc_auc_score(y, prob[:, 1])
  return roc_auc_score(y, prob, multi_class="ovr")


def _mel_stats(audio):
  mel = librosa.feature.melspectrogram(y=audio, sr=16000, n_fft=1024, hop_length=512, n_mels=32, fmax=4000)
  db = librosa.power_to_db(mel, ref=np.max)
  return np.concatenate([db.mean(axis=1), db.std(axis=1)])


def test_labels_are_learnable_from_spectra_but_not_from_energy():
  """Log-mel band statistics predict every demo task; loudness (RMS, peak) predicts none."""
  clips = [generate_example(i, 0, duration_s=6.0) for i in range(400)]
  mel = np.stack([_mel_stats(e["audio"]) for e in clips])
  energy = np.stack([[np.sqrt(np.mean(e["audio"] ** 2)), np.abs(e["audio"]).max()] for e in clips])
  for task in DEMO_TASKS:
    idx = [i for i, e in enumerate(clips) if task.applies_to(e)]
    y = np.array([task.label_index(clips[i]["labels"]) for i in idx])
    groups = [clips[i]["subject_id"] for i in idx]
    mel_auc = _cv_auroc(mel[idx], y, groups)
    energy_auc = _cv_auroc(energy[idx], y, groups)
    assert mel_auc > 0.8, (task.name, mel_auc)
    # One-sided, as cross-validated AUROC of an uninformative feature scatters on both sides of 0.5.
    assert energy_auc < 0.65, (task.name, energy_auc)


def test_cli_writes_records_that_read_back(tmp_path):
  from acula_jax.data import records
  out = tmp_path / "records"
  cmd = [sys.executable, "-m", "acula_jax.data.synthetic", f"--output={out}", "--num_examples=12", "--seed=2",
         "--duration_s=0.5", "--num_shards=2"]
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
  assert proc.returncode == 0, proc.stderr
  manifest = records.read_manifest(out)
  assert manifest["dataset"] == "synthetic" and manifest["num_examples"] == 12
  assert manifest["sample_rate"] == 16000
  expected = {e["id"]: e for e in synthetic.generate_corpus(12, 2, duration_s=0.5)}
  for split, count in manifest["counts"].items():
    source = records.AudioRecordSource(out, split)
    assert len(source) == count
    for i in range(len(source)):
      got = source[i]
      want = expected.pop(got["id"])
      np.testing.assert_array_equal(got["audio"], want["audio"])
      assert got["split"] == split == want["split"]
      assert got["labels"] == want["labels"] and got["metadata"] == want["metadata"]
  assert not expected
