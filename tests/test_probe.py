"""The JAX probe against scikit-learn: AUROC equality and a probe that actually learns."""
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from acula_jax import probe


@pytest.mark.parametrize("num_classes", [2, 3, 5])
def test_macro_auroc_matches_sklearn(num_classes):
  rng = np.random.default_rng(num_classes)
  y = rng.integers(0, num_classes, 300)
  scores = rng.normal(size=(300, num_classes)) + 0.8 * np.eye(num_classes)[y]
  scores = np.round(scores, 1)  # ties must count one half, as in sklearn
  if num_classes == 2:
    expected = sk_metrics.roc_auc_score(y, scores[:, 1])
  else:
    # sklearn's multi_class="ovr" wants probabilities; its definition is this mean of binary AUROCs.
    expected = np.mean([sk_metrics.roc_auc_score(y == c, scores[:, c]) for c in range(num_classes)])
  got = float(probe.macro_auroc(jnp.asarray(scores), jnp.asarray(y), num_classes))
  assert got == pytest.approx(expected, abs=1e-6)


def test_macro_auroc_skips_absent_classes():
  y = np.array([0, 0, 1, 1, 0, 1])
  scores = np.eye(3)[np.array([0, 1, 1, 1, 0, 0])] + 0.01
  expected = np.mean([sk_metrics.roc_auc_score(y == c, scores[:, c]) for c in (0, 1)])
  assert float(probe.macro_auroc(jnp.asarray(scores), jnp.asarray(y), 3)) == pytest.approx(expected)


def _blobs(seed, n, dim=16, num_classes=3, separation=1.5):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(num_classes, dim)) * separation
  y = rng.integers(0, num_classes, n)
  return (centres[y] + rng.normal(size=(n, dim))).astype(np.float32), y.astype(np.int32)


def test_probe_learns_and_seeds_differ():
  x_tr, y_tr = _blobs(0, 400)
  x_va, y_va = _blobs(1, 100)
  x_te, y_te = _blobs(2, 200)
  # same centres: regenerate with the train seed's centres
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(3, 16)) * 1.5
  for arr, ys, seed in ((x_va, y_va, 11), (x_te, y_te, 12)):
    arr[:] = centres[ys] + np.random.default_rng(seed).normal(size=arr.shape)
  w, b, best_val = probe.train_probes(jnp.arange(3), x_tr, y_tr, x_va, y_va, num_classes=3, epochs=20,
                                      batch_size=64, learning_rate=1e-2, decay=0.97, l2=1e-5)
  assert w.shape == (3, 16, 3) and b.shape == (3, 3)
  probs = np.asarray(probe.predict_proba(w, b, x_te))
  for p in probs:
    assert sk_metrics.roc_auc_score(y_te, p, multi_class="ovr") > 0.9
  assert not np.allclose(w[0], w[1])
  assert np.all(np.asarray(best_val) > 0.9)


def test_probe_keeps_best_validation_epoch():
  """With labels of the validation set flipped, later (better-trained) epochs score worse on it."""
  x_tr, y_tr = _blobs(0, 300, num_classes=2)
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(2, 16)) * 1.5
  y_va = np.random.default_rng(5).integers(0, 2, 100).astype(np.int32)
  x_va = (centres[y_va] + np.random.default_rng(6).normal(size=(100, 16))).astype(np.float32)
  _, _, best_flipped = probe.train_probes(jnp.arange(1), x_tr, y_tr, x_va, 1 - y_va, num_classes=2,
                                          epochs=10, batch_size=64, learning_rate=1e-2, decay=0.97,
                                          l2=1e-5)
  w, b, _ = probe.train_probes(jnp.arange(1), x_tr, y_tr, x_va, 1 - y_va, num_classes=2, epochs=10,
                               batch_size=64, learning_rate=1e-2, decay=0.97, l2=1e-5)
  final_like = sk_metrics.roc_auc_score(1 - y_va, np.asarray(probe.predict_proba(w, b, x_va))[0][:, 1])
  # The kept parameters are the ones that scored best_flipped on validation, whichever epoch that was.
  assert final_like == pytest.approx(float(best_flipped[0]), abs=1e-5)
