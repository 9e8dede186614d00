"""Alignment and reconstruction losses (pure jnp, float32 math).

All functions take `[n, d]` batches of embeddings, one row per (audio, report)
pair, and return a scalar loss to minimise. Inputs of any float dtype are cast
to float32 first so that bf16 activations do not degrade the statistics.
"""

import jax
import jax.numpy as jnp

# Floor on squared norms: keeps gradients finite for constant or zero batches
# while being far below the scale of any real embedding batch.
_EPS = 1e-12
# CLIP clips its learnable logit scale at 100 so the softmax cannot saturate.
_MAX_LOGIT_SCALE = 100.0


def _f32(x):
  return jnp.asarray(x, jnp.float32)


def _check_batch(a, t):
  if a.ndim != 2 or t.ndim != 2:
    raise ValueError(f"expected [n, d] embeddings, got {a.shape} and {t.shape}")
  if a.shape[0] != t.shape[0]:
    raise ValueError(f"batch sizes differ: {a.shape[0]} audio vs {t.shape[0]} text")


def _safe_norm(x, eps):
  """Frobenius norm with `eps` inside the sqrt (finite gradient at 0)."""
  return jnp.sqrt(jnp.sum(jnp.square(x)) + eps)


def reference_gram(a, t, *, eps=_EPS):
  """The AcuLa authors' "CKA" loss on d x d Gram matrices.

  G_a = aᵀa and G_t = tᵀt are feature-by-feature second moments of the batch,
  and the loss is 1 - <G_a, G_t>_F / (|G_a|_F |G_t|_F).

  Because aᵀa = sum_i a_i a_iᵀ is a sum over examples, permuting the rows of
  `t` (i.e. breaking the audio/report pairing) leaves the loss unchanged: it
  matches the two batches' feature statistics, not the pairs. It is kept for
  reproducing the reference; prefer `linear_cka` or `contrastive` when the
  pairing should matter.

  Args:
    a: [n, d] audio projections.
    t: [n, d] text projections (same d as `a`).
    eps: added to squared norms for stability.

  Returns:
    Scalar loss in [0, 1].
  """
  a, t = _f32(a), _f32(t)
  _check_batch(a, t)
  if a.shape[1] != t.shape[1]:
    raise ValueError(f"reference_gram needs equal widths, got {a.shape[1]} and {t.shape[1]}")
  g_a = a.T @ a
  g_t = t.T @ t
  sim = jnp.sum(g_a * g_t) / (_safe_norm(g_a, eps) * _safe_norm(g_t, eps))
  return 1.0 - sim


def linear_cka(a, t, *, eps=_EPS, form="auto"):
  """1 - linear CKA (Kornblith et al. 2019) between two paired batches.

  With centred features a_c, t_c, the n x n kernels K = a_c a_cᵀ and
  L = t_c t_cᵀ are compared by CKA = <K, L>_F / (|K|_F |L|_F). The same value
  is |a_cᵀ t_c|²_F / (|a_cᵀ a_c|_F |t_cᵀ t_c|_F) in feature space, which is
  cheaper when the widths are smaller than the batch. Unlike
  `reference_gram`, it depends on which audio row goes with which text row.

  Args:
    a: [n, d_a] audio embeddings.
    t: [n, d_t] text embeddings; d_t may differ from d_a.
    eps: added to squared norms for stability.
    form: "auto" (feature space when max(d_a, d_t) < n), "feature" or
      "sample" (n x n kernels); the forms agree up to float rounding.

  Returns:
    Scalar loss in [0, 1]; 0 when t is an orthogonal transform of a (up to
    isotropic scale and translation).
  """
  a, t = _f32(a), _f32(t)
  _check_batch(a, t)
  if form not in ("auto", "feature", "sample"):
    raise ValueError(f"form must be 'auto', 'feature' or 'sample', got {form!r}")
  n = a.shape[0]
  if form == "auto":
    form = "feature" if max(a.shape[1], t.shape[1]) < n else "sample"
  # Centring the features is the same as H K H with H = I - 11ᵀ/n.
  a = a - a.mean(axis=0, keepdims=True)
  t = t - t.mean(axis=0, keepdims=True)
  if form == "feature":
    cross = a.T @ t
    hsic = jnp.sum(jnp.square(cross))
    norm_a = _safe_norm(a.T @ a, eps)
    norm_t = _safe_norm(t.T @ t, eps)
  else:
    k = a @ a.T
    l = t @ t.T
    hsic = jnp.sum(k * l)
    norm_a = _safe_norm(k, eps)
    norm_t = _safe_norm(l, eps)
  return 1.0 - hsic / (norm_a * norm_t)


def _l2_normalize(x, eps=_EPS):
  return x * jax.lax.rsqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True) + eps)


def contrastive(a, t, log_temperature):
  """Symmetric InfoNCE (CLIP) between paired audio and text embeddings.

  logits = exp(log_temperature) * â t̂ᵀ on L2-normalised rows, where
  `log_temperature` is CLIP's learnable log logit scale (log of the inverse
  temperature; CLIP starts it at log(1/0.07)). The scale is clipped at 100 as
  in CLIP. The loss is the mean of the audio->text and text->audio
  cross-entropies with the diagonal as targets.

  Args:
    a: [n, d] audio embeddings.
    t: [n, d] text embeddings (same d).
    log_temperature: scalar, log of the logit scale.

  Returns:
    Scalar loss.
  """
  a, t = _f32(a), _f32(t)
  _check_batch(a, t)
  if a.shape[1] != t.shape[1]:
    raise ValueError(f"contrastive needs equal widths, got {a.shape[1]} and {t.shape[1]}")
  scale = jnp.minimum(jnp.exp(_f32(log_temperature)), _MAX_LOGIT_SCALE)
  logits = scale * (_l2_normalize(a) @ _l2_normalize(t).T)
  # The positives sit on the diagonal, for both directions.
  loss_a2t = -jnp.mean(jnp.diagonal(jax.nn.log_softmax(logits, axis=1)))
  loss_t2a = -jnp.mean(jnp.diagonal(jax.nn.log_softmax(logits, axis=0)))
  return 0.5 * (loss_a2t + loss_t2a)


def mae_loss(pred, target, mask):
  """Mean over masked patches of the per-patch mean squared error.

  Args:
    pred: [B, N, P] predicted patch values.
    target: [B, N, P] true patch values.
    mask: [B, N], 1 for masked (to reconstruct) patches, 0 for visible ones.

  Returns:
    Scalar loss; visible patches do not contribute.
  """
  pred, target, mask = _f32(pred), _f32(target), _f32(mask)
  per_patch = jnp.mean(jnp.square(pred - target), axis=-1)
  # max(., 1) only matters for an all-visible mask, where the loss is 0.
  return jnp.sum(per_patch * mask) / jnp.maximum(jnp.sum(mask), 1.0)


ALIGNMENT_LOSSES = ("reference_gram", "linear_cka", "contrastive")


def alignment_loss(name, audio_emb, text_emb, log_temperature=None):
  """Dispatches to one of `ALIGNMENT_LOSSES` by name.

  Args:
    name: "reference_gram", "linear_cka" or "contrastive".
    audio_emb: [n, d_a] audio embeddings.
    text_emb: [n, d_t] text embeddings.
    log_temperature: the log logit scale; required by "contrastive" and
      ignored by the others.

  Returns:
    Scalar loss.
  """
  if name == "reference_gram":
    return reference_gram(audio_emb, text_emb)
  if name == "linear_cka":
    return linear_cka(audio_emb, text_emb)
  if name == "contrastive":
    if log_temperature is None:
      raise ValueError("alignment loss 'contrastive' needs log_temperature")
    return contrastive(audio_emb, text_emb, log_temperature)
  raise ValueError(f"unknown alignment loss {name!r}; valid: {', '.join(ALIGNMENT_LOSSES)}")
