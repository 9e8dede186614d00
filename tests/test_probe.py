"""The JAX heads and numpy metrics against scikit-learn: AUROC, MAE/MAPE, least squares, heads that learn."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import linear_model
from sklearn import metrics as sk_metrics
from sklearn import preprocessing

from acula_jax.evaluators import probe


def _scores(num_classes, n=300, seed=0):
  rng = np.random.default_rng(seed + num_classes)
  y = rng.integers(0, num_classes, n)
  scores = rng.normal(size=(n, num_classes)) + 0.8 * np.eye(num_classes)[y]
  return np.round(scores, 1), y  # ties must count one half, as in sklearn


_jax_auroc = probe.jit_fast_on_cpu(static_argnames="num_classes")(probe.macro_auroc)


def _sk_macro(y, scores, num_classes):
  if num_classes == 2:
    return sk_metrics.roc_auc_score(y, scores[:, 1])
  # sklearn's multi_class="ovr" wants probabilities; its definition is this mean of binary AUROCs.
  return np.mean([sk_metrics.roc_auc_score(y == c, scores[:, c]) for c in range(num_classes) if (y == c).any()])


@pytest.mark.parametrize("num_classes", [2, 3, 5])
def test_auroc_matches_sklearn(num_classes):
  scores, y = _scores(num_classes)
  expected = _sk_macro(y, scores, num_classes)
  assert float(_jax_auroc(jnp.asarray(scores), jnp.asarray(y), num_classes=num_classes)) == pytest.approx(
      expected, abs=1e-6)
  assert probe.auroc(scores, y, num_classes) == pytest.approx(expected, abs=1e-12)
  probabilities = np.exp(scores) / np.exp(scores).sum(1, keepdims=True)
  if num_classes > 2:
    assert probe.auroc(probabilities, y, num_classes) == pytest.approx(
        sk_metrics.roc_auc_score(y, probabilities, multi_class="ovr", average="macro"), abs=1e-12)


def test_auroc_skips_absent_classes():
  y = np.array([0, 0, 1, 1, 0, 1])
  scores = np.eye(3)[np.array([0, 1, 1, 1, 0, 0])] + 0.01
  expected = np.mean([sk_metrics.roc_auc_score(y == c, scores[:, c]) for c in (0, 1)])
  assert float(_jax_auroc(jnp.asarray(scores), jnp.asarray(y), num_classes=3)) == pytest.approx(expected)
  assert probe.auroc(scores, y, 3) == pytest.approx(expected)
  assert np.isnan(probe.auroc(scores, np.zeros(6, int), 3))


def test_regression_metrics_match_sklearn():
  rng = np.random.default_rng(0)
  y = rng.uniform(1, 5, 50)
  pred = y + rng.normal(size=50)
  assert probe.mae(y, pred) == pytest.approx(sk_metrics.mean_absolute_error(y, pred))
  assert probe.mape(y, pred) == pytest.approx(100 * sk_metrics.mean_absolute_percentage_error(y, pred))


def test_roc_curve_matches_sklearn():
  scores, y = _scores(2)
  fpr, tpr = probe.roc_curve(scores[:, 1], y == 1)
  sk_fpr, sk_tpr, _ = sk_metrics.roc_curve(y, scores[:, 1], drop_intermediate=False)
  np.testing.assert_allclose(fpr, sk_fpr)
  np.testing.assert_allclose(tpr, sk_tpr)
  assert np.trapezoid(tpr, fpr) == pytest.approx(sk_metrics.roc_auc_score(y, scores[:, 1]))


@pytest.mark.parametrize("n,d", [(40, 5), (12, 30)])
def test_ols_matches_sklearn_linear_regression(n, d):
  rng = np.random.default_rng(n)
  x, y = rng.normal(size=(n, d)), rng.normal(size=n)
  x_test = rng.normal(size=(7, d))
  w, b = probe.fit_ols(x, y)
  reference = linear_model.LinearRegression().fit(x, y)   # minimum-norm when d > n, as lstsq
  np.testing.assert_allclose(probe.predict_ols(w, b, x_test), reference.predict(x_test), rtol=1e-6, atol=1e-8)


def _blobs(n, *, seed, centres):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, len(centres), n)
  return (centres[y] + rng.normal(size=(n, centres.shape[1]))).astype(np.float32), y.astype(np.int32)


# One shape for both probe tests: one compilation.
_PROBE = dict(num_classes=3, epochs=10, batch_size=64, learning_rate=1e-2, decay=0.97, l2=1e-5)


def _one_fold(x_tr, y_tr, x_va, y_va, x_te, *, pad_with=None):
  """train_probes on one fold laid out as rows of one matrix: [S, n_test, C] test probabilities, best val."""
  x = np.concatenate([x_tr, x_va, x_te])
  y = np.concatenate([y_tr, y_va, np.zeros(len(x_te), np.int32)])
  n_tr, n_va = len(x_tr), len(x_va)
  train = np.arange(n_tr)
  if pad_with is not None:  # padded slots: never trained on, whatever row they point at
    train = np.concatenate([train, np.full(40, pad_with)])
  proba, best = probe.train_probes(jnp.arange(3), x, y, train[None], np.asarray([n_tr]),
                                   np.arange(n_tr, n_tr + n_va)[None], np.asarray([n_va]), **_PROBE)
  return np.asarray(proba)[0], np.asarray(best)[0], (n_tr + n_va, len(x))


def test_probe_learns_and_seeds_differ():
  centres = np.random.default_rng(0).normal(size=(3, 16)) * 1.5
  x_tr, y_tr = _blobs(300, seed=1, centres=centres)
  x_va, y_va = _blobs(100, seed=2, centres=centres)
  x_te, y_te = _blobs(200, seed=3, centres=centres)
  proba, best_val, (start, end) = _one_fold(x_tr, y_tr, x_va, y_va, x_te)
  assert proba.shape == (3, 600, 3)
  for p in proba[:, start:end]:
    assert sk_metrics.roc_auc_score(y_te, p, multi_class="ovr") > 0.9
  assert not np.allclose(proba[0], proba[1])
  assert np.all(best_val > 0.9)


def test_padded_training_slots_are_never_used():
  centres = np.random.default_rng(0).normal(size=(3, 16)) * 1.5
  x_tr, y_tr = _blobs(300, seed=1, centres=centres)
  x_va, y_va = _blobs(100, seed=2, centres=centres)
  x_te, _ = _blobs(200, seed=3, centres=centres)
  first, _, _ = _one_fold(x_tr, y_tr, x_va, y_va, x_te, pad_with=0)
  second, _, _ = _one_fold(x_tr, y_tr, x_va, y_va, x_te, pad_with=550)   # a test row
  np.testing.assert_allclose(first, second, atol=1e-6)


def test_each_fold_trains_as_it_would_alone():
  """Folds of different sizes in one program: each fold's result is the one it gets on its own."""
  assert jax.config.jax_threefry_partitionable   # the batch order of a fold does not depend on the others
  centres = np.random.default_rng(0).normal(size=(3, 16)) * 1.5
  x, y = _blobs(400, seed=1, centres=centres)
  small = (np.arange(0, 50), np.arange(50, 70))           # 50 rows: one step of a 64-row batch per epoch
  large = (np.arange(100, 330), np.arange(330, 400))      # 230 rows: four steps per epoch
  alone = lambda fold: probe.train_probes(jnp.arange(2), x, y, fold[0][None], np.asarray([len(fold[0])]),
                                          fold[1][None], np.asarray([len(fold[1])]), **_PROBE)
  rows = np.stack([np.pad(small[0], (0, 180), mode="edge"), large[0]])
  val = np.stack([np.pad(small[1], (0, 50), mode="edge"), large[1]])
  together, best = probe.train_probes(jnp.arange(2), x, y, rows, np.asarray([50, 230]), val,
                                      np.asarray([20, 70]), **_PROBE)
  for k, fold in enumerate((small, large)):
    proba, best_alone = alone(fold)
    np.testing.assert_allclose(np.asarray(together)[k], np.asarray(proba)[0], atol=1e-5)
    np.testing.assert_allclose(np.asarray(best)[k], np.asarray(best_alone)[0], atol=1e-6)


def test_probe_keeps_best_validation_epoch():
  """With the validation labels permuted, later (better-trained) epochs score worse on it."""
  centres = np.random.default_rng(0).normal(size=(3, 16)) * 1.5
  x_tr, y_tr = _blobs(300, seed=1, centres=centres)
  x_va, y_va = _blobs(100, seed=5, centres=centres)
  wrong = (y_va + 1) % 3
  proba, best, _ = _one_fold(x_tr, y_tr, x_va, wrong, x_va[:200])
  # The kept parameters are the ones that scored `best` on validation, whichever epoch that was.
  for seed, p in enumerate(proba[:, 300:400]):
    assert probe.auroc(p, wrong, 3) == pytest.approx(float(best[seed]), abs=1e-5)


@pytest.mark.parametrize("num_classes", [2, 3])
def test_logistic_regression_matches_sklearn(num_classes):
  rng = np.random.default_rng(num_classes)
  centres = rng.normal(size=(num_classes, 12))
  x, y = _blobs(260, seed=7, centres=centres)
  x = x * rng.uniform(0.5, 20, 12) + rng.normal(0, 5, 12)      # unscaled features: standardisation matters
  train = np.arange(260) < 180
  scaler = preprocessing.StandardScaler().fit(x[train])
  grid = np.asarray([0.01, 1.0, 100.0], np.float32)
  path = np.asarray(probe.fit_logistic_path(x, y, np.stack([train, ~train]).astype(np.float32), grid,
                                            num_classes=num_classes))
  assert path.shape == (3, 2, 260, num_classes)
  for c, fits in zip(grid, path):
    reference = linear_model.LogisticRegression(C=float(c), max_iter=10000, tol=1e-10).fit(
        scaler.transform(x[train]), y[train])
    expected = reference.predict_proba(scaler.transform(x[~train]))
    proba = fits[0, ~train]
    np.testing.assert_allclose(proba, expected, atol=2e-3)
    if num_classes == 2:
      ours, theirs = sk_metrics.roc_auc_score(y[~train], proba[:, 1]), sk_metrics.roc_auc_score(y[~train], expected[:, 1])
    else:
      ours = sk_metrics.roc_auc_score(y[~train], proba, multi_class="ovr")
      theirs = sk_metrics.roc_auc_score(y[~train], expected, multi_class="ovr")
    assert abs(ours - theirs) < 1e-3


def test_mlp_regressor_learns_and_keeps_best_validation():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(240, 8)).astype(np.float32)
  y = (15 + 3 * x[:, 0] - 2 * x[:, 1] + 0.1 * rng.normal(size=240)).astype(np.float32)
  params, best_mae = probe.train_regressors(jnp.arange(2), x[:160], y[:160], x[160:200], y[160:200], hidden=8,
                                            epochs=40, batch_size=32, learning_rate=1e-2, decay=0.97, l2=1e-5)
  pred = np.asarray(probe.predict_regression(params, x[200:]))
  assert pred.shape == (2, 40)
  baseline = probe.mae(y[200:], np.full(40, y[:160].mean()))
  for p in pred:
    assert probe.mae(y[200:], p) < 0.3 * baseline
  val_pred = np.asarray(probe.predict_regression(params, x[160:200]))
  for seed, p in enumerate(val_pred):
    assert probe.mae(y[160:200], p) == pytest.approx(float(best_mae[seed]), rel=1e-4)
