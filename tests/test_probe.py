"""The JAX heads and numpy metrics against scikit-learn: AUROC, MAE/MAPE, least squares, heads that learn."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import linear_model
from sklearn import metrics as sk_metrics

from acula_jax import probe


def _scores(num_classes, n=300, seed=0):
  rng = np.random.default_rng(seed + num_classes)
  y = rng.integers(0, num_classes, n)
  scores = rng.normal(size=(n, num_classes)) + 0.8 * np.eye(num_classes)[y]
  return np.round(scores, 1), y  # ties must count one half, as in sklearn


_jax_auroc = jax.jit(probe.macro_auroc, static_argnames="num_classes", compiler_options=probe.FAST_COMPILE)


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


def test_probe_learns_and_seeds_differ():
  centres = np.random.default_rng(0).normal(size=(3, 16)) * 1.5
  x_tr, y_tr = _blobs(300, seed=1, centres=centres)
  x_va, y_va = _blobs(100, seed=2, centres=centres)
  x_te, y_te = _blobs(200, seed=3, centres=centres)
  w, b, best_val = probe.train_probes(jnp.arange(3), x_tr, y_tr, x_va, y_va, **_PROBE)
  assert w.shape == (3, 16, 3) and b.shape == (3, 3)
  for p in np.asarray(probe.predict_proba(w, b, x_te)):
    assert sk_metrics.roc_auc_score(y_te, p, multi_class="ovr") > 0.9
  assert not np.allclose(w[0], w[1])
  assert np.all(np.asarray(best_val) > 0.9)


def test_probe_keeps_best_validation_epoch():
  """With the validation labels permuted, later (better-trained) epochs score worse on it."""
  centres = np.random.default_rng(0).normal(size=(3, 16)) * 1.5
  x_tr, y_tr = _blobs(300, seed=1, centres=centres)
  x_va, y_va = _blobs(100, seed=5, centres=centres)
  wrong = (y_va + 1) % 3
  w, b, best = probe.train_probes(jnp.arange(3), x_tr, y_tr, x_va, wrong, **_PROBE)
  # The kept parameters are the ones that scored `best` on validation, whichever epoch that was.
  for seed, p in enumerate(np.asarray(probe.predict_proba(w, b, x_va))):
    assert probe.auroc(p, wrong, 3) == pytest.approx(float(best[seed]), abs=1e-5)


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
