"""Levels, weighted AUROC, subject bootstrap intervals and fold sizes, against sklearn and closed forms."""
import dataclasses

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from acula_jax import errors
from acula_jax.evaluators import linear_probe
from acula_jax.evaluators import report
from acula_jax.evaluators import probe
from acula_jax.evaluators import scoring
from acula_jax.evaluators import tasks

PROBE = {"learning_rate": 1e-2, "decay": 0.97, "l2": 1e-5, "epochs": 30, "batch_size": 64}


def test_weighted_auroc_is_sklearn_on_the_repeated_rows():
  rng = np.random.default_rng(0)
  n = 40
  labels = rng.integers(0, 3, n)
  proba = rng.dirichlet(np.ones(3), n).round(1)       # rounded: many ties
  weights = rng.integers(0, 4, size=(5, n))
  got = probe.weighted_macro_auroc(proba, labels, 3, weights)
  for row, value in zip(weights, got):
    repeat = np.repeat(np.arange(n), row)
    expected = np.mean([sk_metrics.roc_auc_score(labels[repeat] == c, proba[repeat, c]) for c in range(3)])
    assert value == pytest.approx(expected, abs=1e-12)   # sklearn's one-vs-rest macro average
  binary = (labels == 1).astype(int)
  for row, value in zip(weights, probe.weighted_macro_auroc(proba[:, :2], binary, 2, weights)):
    repeat = np.repeat(np.arange(n), row)
    assert value == pytest.approx(sk_metrics.roc_auc_score(binary[repeat], proba[repeat, 1]), abs=1e-12)


def test_subject_weights_follow_the_subject_not_the_row():
  subjects = np.asarray(["a", "a", "b", "c", "c", "c"])
  weights = scoring.subject_weights(subjects, 2000)
  assert weights.shape == (2000, 6)
  assert (weights[:, 0] == weights[:, 1]).all() and (weights[:, 3] == weights[:, 5]).all()
  # The same subject draws the same multiplicities wherever it appears (another fold, task, encoder).
  again = scoring.subject_weights(np.asarray(["c", "z", "a"]), 2000)
  assert (again[:, 0] == weights[:, 3]).all() and (again[:, 2] == weights[:, 0]).all()
  assert not (again[:, 1] == weights[:, 2]).all()
  # Poisson(1) multiplicities: mean 1, variance 1.
  assert abs(weights[:, 2].mean() - 1) < 0.1 and abs(weights[:, 2].var() - 1) < 0.15


def _delong_std(score, positive):
  """DeLong et al. (1988): the standard error of an empirical AUROC from its structural components."""
  pos, neg = score[positive], score[~positive]
  psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
  v10, v01 = psi.mean(1), psi.mean(0)
  return np.sqrt(v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg))


def test_subject_bootstrap_interval_matches_delong_with_one_recording_per_subject():
  rng = np.random.default_rng(1)
  n = 300
  y = rng.integers(0, 2, n)
  score = rng.normal(size=n) + 0.9 * y
  proba = np.stack([1 - score, score], axis=-1)[None]   # one seed; AUROC reads column 1 only
  part = scoring.Part("test", y.astype(float), proba, np.asarray([f"s{i}" for i in range(n)]))
  outcome = scoring.score([part], "single", regression=False, bootstrap=4000)
  auc = sk_metrics.roc_auc_score(y, score)
  assert outcome["mean"] == pytest.approx(auc)
  low, high = outcome["ci95"]
  width = 2 * 1.959964 * _delong_std(score, y == 1)
  assert high - low == pytest.approx(width, rel=0.12)
  assert low < auc < high and (low + high) / 2 == pytest.approx(auc, abs=0.01)


def test_clustered_bootstrap_is_wider_than_pretending_recordings_are_independent():
  rng = np.random.default_rng(2)
  subjects = np.repeat(np.arange(60), 4)
  y = np.repeat(rng.integers(0, 2, 60), 4)
  score = np.repeat(rng.normal(size=60), 4) + 0.8 * y + 0.1 * rng.normal(size=240)   # recordings alike
  pred = np.stack([1 - score, score], axis=-1)[None]
  clustered = scoring.score([scoring.Part("t", y.astype(float), pred, subjects.astype(str))], "single",
                            regression=False, bootstrap=2000)
  independent = scoring.score([scoring.Part("t", y.astype(float), pred, np.arange(240).astype(str))], "single",
                              regression=False, bootstrap=2000)
  width = lambda o: o["ci95"][1] - o["ci95"][0]
  assert width(clustered) > 1.5 * width(independent)


def _one_site_index(num_subjects=60, recordings=3, dim=4, seed=0):
  """Subjects whose class shows in only one of their recordings (the others are noise)."""
  rng = np.random.default_rng(seed)
  index, features = [], []
  for s in range(num_subjects):
    label = s % 2
    split = "test" if s % 3 == 0 else "train"
    for k in range(recordings):
      x = rng.normal(size=dim)
      if label and k == 0:
        x[0] += 4.0
      index.append({"id": f"s{s}_{k}", "split": split, "subject_id": f"s{s}", "labels": {"d": "ny"[label]},
                    "metadata": {}})
      features.append(x)
  return index, np.asarray(features, np.float32)


def test_subject_level_sees_a_finding_in_one_recording():
  index, features = _one_site_index()
  task = tasks.Task("t", "table", "heart", "d", ("n", "y"))
  levels, note = linear_probe.task_levels(task, index, "auto")
  assert levels == ("recording", "subject") and not note
  outcome, detail = linear_probe.probe_task(task, index, features, PROBE, seeds=2, levels=levels, subject_score="max",
                                            bootstrap=200)
  subject = outcome["subject"]
  assert subject["num_test"] == 20 and outcome["num_test"] == 60 and subject["num_test_subjects"] == 20
  # The first seed's subject score is sklearn's AUROC of the max of that seed's recording probabilities.
  test_subjects = np.asarray([r["subject_id"] for r in index if r["split"] == "test"])
  order = sorted(set(test_subjects))
  best = [detail["proba"][test_subjects == s, 1].max() for s in order]
  truth = [detail["y"][test_subjects == s][0] for s in order]
  assert subject["per_seed"][0] == pytest.approx(sk_metrics.roc_auc_score(truth, best))
  # Only a third of a positive subject's recordings show the finding: recordings score far lower.
  assert subject["mean"] > 0.95 and outcome["mean"] < 0.8
  assert subject["ci95"][0] > outcome["ci95"][0]
  mean_outcome, _ = linear_probe.probe_task(task, index, features, PROBE, seeds=2, levels=("subject",))
  assert mean_outcome["level"] == "subject" and "subject" not in mean_outcome
  assert outcome["mean"] < mean_outcome["mean"] <= subject["mean"] + 1e-9


def test_levels_follow_the_request_and_the_data():
  index, _ = _one_site_index(12)
  task = tasks.Task("t", "table", "heart", "d", ("n", "y"))
  assert linear_probe.task_levels(task, index, "recording") == (("recording",), "")
  single = [dict(r, subject_id=r["id"]) for r in index]
  assert linear_probe.task_levels(task, single, "auto") == (("recording",), "")
  assert linear_probe.task_levels(task, single, "both") == (("recording", "subject"), "")
  # Two subjects whose recordings disagree (per-cycle labels, say).
  index[1]["labels"] = {"d": "y"}
  index[4]["labels"] = {"d": "n"}
  levels, note = linear_probe.task_levels(task, index, "auto")
  assert levels == ("recording",) and note.startswith("subject level skipped: 2 of 12 subjects") and "s0, s1" in note
  with pytest.raises(errors.UsageError, match=r"2 subjects' recordings disagree \(s0, s1\)"):
    linear_probe.task_levels(task, index, "subject")
  with pytest.raises(ValueError, match="aggregate must be one of"):
    scoring.levels_for("patients", ["a"])


def test_fold_sizes_count_recordings_subjects_and_classes():
  index, _ = _one_site_index(12)
  task = tasks.Task("t", "table", "heart", "d", ("n", "y"))
  folds = tasks.make_folds(task, index)
  sizes = tasks.fold_sizes(task, index, folds)
  for side in ("train", "valid", "test"):
    rows = getattr(folds.folds[0], side)
    assert sizes[side]["recordings"] == len(rows)
    assert sizes[side]["subjects"] == len({index[r]["subject_id"] for r in rows})
    assert sizes[side]["classes"] == {c: sum(index[r]["labels"]["d"] == c for r in rows) for c in "ny"}
  assert sizes["test"] == {"recordings": 12, "subjects": 4, "classes": {"n": 6, "y": 6}}
  loo = tasks.Task("t", "table", "heart", "d", ("n", "y"), protocol="loso")
  sizes = tasks.fold_sizes(loo, index, tasks.make_folds(loo, index))
  assert sizes["folds"] == 12 and sizes["test"]["subjects"] == 12 and sizes["test"]["recordings"] == 36


def test_cross_validation_keeps_subjects_in_one_fold_and_stratifies():
  index, _ = _one_site_index(40)     # 40 subjects x 3 recordings, one class per subject
  task = tasks.Task("t", "table", "heart", "d", ("n", "y"))
  folds = tasks.make_folds(task, index, protocol="repeated_cv:5:3")
  assert folds.aggregate == "mean" and len(folds.folds) == 15
  subject = lambda r: index[r]["subject_id"]
  tested = []
  for rep in range(3):
    mine = folds.folds[5 * rep:5 * rep + 5]
    tests = [{subject(r) for r in f.test} for f in mine]
    # Every subject is tested exactly once per repetition, and never trains or validates in its test fold.
    assert sorted(s for t in tests for s in t) == sorted({r["subject_id"] for r in index})
    for f, t in zip(mine, tests):
      assert not t & {subject(r) for r in np.concatenate([f.train, f.valid])}
      assert not {subject(r) for r in f.train} & {subject(r) for r in f.valid}
      assert len(f.test) == 24 and sum(index[r]["labels"]["d"] == "y" for r in f.test) == 12   # stratified
    tested.append(tests)
  assert tested[0] != tested[1]    # other fold seeds, other folds
  assert tasks.effective_protocol(task, "cv:5") == "cv:5"
  assert tasks.effective_protocol(dataclasses.replace(task, protocol="loso"), "cv:5") == "loso"
  with pytest.raises(ValueError, match="expected official, cv:K or repeated_cv:K:R"):
    tasks.parse_cv("cv:five")


def test_paired_test_holds_its_size_on_equally_good_encoders():
  """Two encoders that see the same signal with independent noise: p < 0.05 in about 5% of studies."""
  rng = np.random.default_rng(3)
  p_values, covered = [], []
  for repeat in range(200):
    n = 120
    y = rng.integers(0, 2, n)
    signal = y + rng.normal(size=n)
    subjects = np.asarray([f"r{repeat}s{i}" for i in range(n)])
    part = lambda noise: [scoring.Part("t", y.astype(float), np.stack([-noise, noise], -1)[None], subjects)]
    a, b = part(signal + rng.normal(size=n)), part(signal + rng.normal(size=n))
    result = scoring.paired(a, b, "single", regression=False, num_classes=2, num_samples=400)
    p_values.append(result["p_value"])
    covered.append(result["ci95"][0] <= 0 <= result["ci95"][1])
  rate = np.mean(np.asarray(p_values) < 0.05)
  assert 0.01 <= rate <= 0.10, rate
  assert abs(np.mean(covered) - (1 - rate)) < 0.03    # the interval and the test agree


def test_evaluation_with_cross_validation_two_probes_and_a_comparison(tmp_path):
  index, features = _one_site_index(36)
  rng = np.random.default_rng(0)
  task = tasks.Task("t", "table", "heart", "d", ("n", "y"))
  noise = features + rng.normal(size=features.shape).astype(np.float32) * 3
  outcomes, details = {}, {}
  for name, x in (("good", features), ("noisy", noise)):
    for probe_name in ("opera", "logreg"):
      column = report.column_name(name, probe_name, ("opera", "logreg"))
      outcomes[column], details[column] = linear_probe.probe_task(
          task, index, x, PROBE, seeds=2, levels=("recording", "subject"), bootstrap=200,
          protocol="repeated_cv:3:2", probe_name=probe_name)
  good = outcomes["good · logreg"]
  assert good["protocol"] == "repeated_cv:3:2" and good["num_folds"] == 6 and good["spread"] == "folds"
  assert good["std"] == pytest.approx(np.std(list(good["per_fold"].values())))
  assert len(good["per_seed"]) == 1 and len(outcomes["good · opera"]["per_seed"]) == 2
  official, _ = linear_probe.probe_task(task, index, features, PROBE, seeds=2, probe_name="logreg")
  assert "±" not in scoring.cell_text(official) and "±" in scoring.cell_text(good)   # one fit: no spread
  results = {"tasks": {"t": outcomes}, "task_info": {"t": task.info()}}
  compared = linear_probe.compare_tasks(results, {"t": details}, [("good", "noisy")], ("opera", "logreg"), 300)
  entry = compared["good vs noisy"]["logreg"]["subject"]["tasks"]["t"]
  assert entry["diff"] == pytest.approx(good["subject"]["mean"] - outcomes["noisy · logreg"]["subject"]["mean"])
  assert entry["diff"] > 0 and entry["excludes_zero"] and entry["p_value"] < 0.05
