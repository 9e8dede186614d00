"""Tests for acula_jax.losses against independent numpy / torch computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from acula_jax import losses


def _pairs(n=16, d_a=8, d_t=12, noise=0.1, seed=0):
  """Paired batches where t is a noisy linear map of a (so pairing matters)."""
  rng = np.random.default_rng(seed)
  a = rng.normal(size=(n, d_a)).astype(np.float32)
  w = rng.normal(size=(d_a, d_t)).astype(np.float32)
  t = a @ w + noise * rng.normal(size=(n, d_t)).astype(np.float32)
  return a, t


def _numpy_cka_loss(a, t):
  """1 - HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with explicit centring matrix H."""
  a, t = np.asarray(a, np.float64), np.asarray(t, np.float64)
  n = a.shape[0]
  h = np.eye(n) - np.ones((n, n)) / n
  k, l = a @ a.T, t @ t.T
  hsic = lambda x, y: np.trace(x @ h @ y @ h)
  return 1.0 - hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


@pytest.mark.parametrize("form", ["auto", "feature", "sample"])
@pytest.mark.parametrize("n,d_a,d_t", [(16, 8, 12), (6, 8, 12)])
def test_linear_cka_matches_numpy_hsic(form, n, d_a, d_t):
  a, t = _pairs(n, d_a, d_t, noise=1.0)
  got = float(losses.linear_cka(a, t, form=form))
  np.testing.assert_allclose(got, _numpy_cka_loss(a, t), atol=2e-6)


def test_linear_cka_zero_for_orthogonal_map_and_scale_invariant():
  rng = np.random.default_rng(1)
  a = rng.normal(size=(32, 8)).astype(np.float32)
  q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
  t = (a @ q * 3.7 + 2.0).astype(np.float32)  # rotation, scale and shift
  assert abs(float(losses.linear_cka(a, t))) < 1e-5
  a2, t2 = _pairs()
  base = float(losses.linear_cka(a2, t2))
  np.testing.assert_allclose(float(losses.linear_cka(2.5 * a2, 0.1 * t2)), base, atol=1e-6)


def test_pair_awareness():
  # Noisy copies: equal widths (for reference_gram) and pairs that are close
  # in cosine (so the contrastive loss is low only for the true pairs).
  rng = np.random.default_rng(2)
  a = rng.normal(size=(16, 8)).astype(np.float32)
  t = (a + 0.3 * rng.normal(size=a.shape)).astype(np.float32)
  perm = rng.permutation(a.shape[0])
  t_shuf = t[perm]
  # reference_gram only sees sum_i t_i t_iᵀ, which a permutation does not change.
  np.testing.assert_allclose(
      float(losses.reference_gram(a, t_shuf)), float(losses.reference_gram(a, t)), atol=1e-6)
  assert float(losses.linear_cka(a, t_shuf)) > float(losses.linear_cka(a, t)) + 0.1
  lt = jnp.log(1 / 0.07)
  assert float(losses.contrastive(a, t_shuf, lt)) > float(losses.contrastive(a, t, lt)) + 0.1


def test_reference_gram_matches_numpy():
  a, t = _pairs(d_t=8, noise=1.0)
  a64, t64 = a.astype(np.float64), t.astype(np.float64)
  g_a, g_t = a64.T @ a64, t64.T @ t64
  want = 1 - np.sum(g_a * g_t) / (np.linalg.norm(g_a) * np.linalg.norm(g_t))
  np.testing.assert_allclose(float(losses.reference_gram(a, t)), want, atol=2e-6)
  with pytest.raises(ValueError, match="equal widths"):
    losses.reference_gram(a, np.zeros((16, 5), np.float32))


@pytest.mark.parametrize("log_t", [np.log(1 / 0.07), np.log(1000.0)])  # second one is clipped
def test_contrastive_matches_torch_cross_entropy(log_t):
  torch = pytest.importorskip("torch")
  f = torch.nn.functional
  a, t = _pairs(d_t=8, noise=1.0)
  ta, tt = torch.from_numpy(a).double(), torch.from_numpy(t).double()
  scale = min(np.exp(log_t), 100.0)
  logits = scale * f.normalize(ta, dim=1) @ f.normalize(tt, dim=1).T
  labels = torch.arange(a.shape[0])
  want = 0.5 * (f.cross_entropy(logits, labels) + f.cross_entropy(logits.T, labels))
  got = float(losses.contrastive(a, t, jnp.float32(log_t)))
  np.testing.assert_allclose(got, want.item(), rtol=1e-5)


def test_gradients_finite_including_degenerate_batches():
  a, t = _pairs(d_t=8)
  const = np.ones_like(a)  # centres to zero: CKA's norms vanish
  fns = [losses.reference_gram, losses.linear_cka,
         lambda x, y: losses.contrastive(x, y, jnp.float32(2.0))]
  for fn in fns:
    for x in (a, const):
      grads = jax.grad(fn, argnums=(0, 1))(jnp.asarray(x), jnp.asarray(t))
      assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads), fn


def test_mae_loss_only_counts_masked_patches():
  rng = np.random.default_rng(3)
  pred = rng.normal(size=(2, 6, 4)).astype(np.float32)
  target = rng.normal(size=(2, 6, 4)).astype(np.float32)
  mask = np.array([[1, 0, 1, 0, 0, 1], [0, 0, 1, 1, 0, 0]], np.float32)
  want = ((pred - target) ** 2).mean(-1)[mask == 1].mean()
  np.testing.assert_allclose(float(losses.mae_loss(pred, target, mask)), want, rtol=1e-6)
  target2 = np.where(mask[..., None] == 0, 99.0, target)
  np.testing.assert_allclose(float(losses.mae_loss(pred, target2, mask)), want, rtol=1e-6)


def test_alignment_loss_dispatch():
  a, t = _pairs(d_t=8)
  assert float(losses.alignment_loss("reference_gram", a, t)) == float(losses.reference_gram(a, t))
  assert float(losses.alignment_loss("linear_cka", a, t)) == float(losses.linear_cka(a, t))
  assert float(losses.alignment_loss("contrastive", a, t, 1.5)) == float(
      losses.contrastive(a, t, 1.5))
  with pytest.raises(ValueError, match="reference_gram, linear_cka, contrastive"):
    losses.alignment_loss("cka", a, t)
  with pytest.raises(ValueError, match="log_temperature"):
    losses.alignment_loss("contrastive", a, t)
