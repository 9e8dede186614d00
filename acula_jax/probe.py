"""OPERA's linear-probe protocol as one jitted JAX program, vectorised over seeds.

Frozen features -> one linear layer, Adam (lr decayed x`decay` per epoch), L2 penalty, gradient clipping,
`epochs` epochs of shuffled mini-batches, and the parameters of the epoch with the best validation macro
AUROC kept (OPERA's best-validation checkpoint). Every seed changes the initialisation and batch order.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax


def macro_auroc(scores, labels, num_classes: int):
  """Macro one-vs-rest AUROC (ties count 1/2), matching sklearn's roc_auc_score.

  Binary tasks (num_classes == 2) score class 1 only, as sklearn does. Classes without positives or
  negatives in `labels` are left out of the mean. Pairwise form: O(n^2) memory per class, meant for
  validation sets of up to a few thousand examples.
  """
  classes = [1] if num_classes == 2 else list(range(num_classes))
  aucs, valid = [], []
  for c in classes:
    score = scores[:, c]
    positive = (labels == c).astype(jnp.float32)
    negative = 1.0 - positive
    diff = score[:, None] - score[None, :]
    wins = (diff > 0).astype(jnp.float32) + 0.5 * (diff == 0).astype(jnp.float32)
    pairs = positive.sum() * negative.sum()
    aucs.append(jnp.einsum("i,ij,j->", positive, wins, negative) / jnp.maximum(pairs, 1.0))
    valid.append(pairs > 0)
  aucs, valid = jnp.stack(aucs), jnp.stack(valid).astype(jnp.float32)
  return (aucs * valid).sum() / jnp.maximum(valid.sum(), 1.0)


def standardize(train, *others):
  """Z-scores every array with the training features' statistics."""
  mean, std = train.mean(0), train.std(0) + 1e-6
  return [(x - mean) / std for x in (train, *others)]


@functools.partial(jax.jit, static_argnames=("num_classes", "epochs", "batch_size", "decay"))
def train_probes(seeds, x_train, y_train, x_val, y_val, *, num_classes: int, epochs: int,
                 batch_size: int, learning_rate: float, decay: float, l2: float, clip: float = 1.0):
  """Trains one probe per seed; returns the best-validation (W [S, d, C], b [S, C]) and val AUROCs."""
  n, dim = x_train.shape
  batch_size = min(batch_size, n)
  steps_per_epoch = -(-n // batch_size)
  schedule = optax.exponential_decay(learning_rate, steps_per_epoch, decay, staircase=True)
  tx = optax.chain(optax.clip_by_global_norm(clip), optax.add_decayed_weights(l2),
                   optax.scale_by_adam(), optax.scale_by_learning_rate(schedule))

  def loss_fn(params, x, y):
    logits = x @ params["w"] + params["b"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  def val_auroc(params):
    return macro_auroc(jax.nn.softmax(x_val @ params["w"] + params["b"]), y_val, num_classes)

  def one_seed(seed):
    init_key, order_key = jax.random.split(jax.random.key(seed))
    bound = 1.0 / np.sqrt(dim)  # PyTorch nn.Linear's default initialisation
    w_key, b_key = jax.random.split(init_key)
    params = {"w": jax.random.uniform(w_key, (dim, num_classes), minval=-bound, maxval=bound),
              "b": jax.random.uniform(b_key, (num_classes,), minval=-bound, maxval=bound)}
    opt_state = tx.init(params)

    def step(carry, idx):
      params, opt_state = carry
      grads = jax.grad(loss_fn)(params, x_train[idx], y_train[idx])
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None

    def epoch(carry, key):
      params, opt_state, best, best_auc = carry
      # A fresh permutation, wrapped around so every step has a full batch.
      order = jnp.resize(jax.random.permutation(key, n), (steps_per_epoch * batch_size,))
      (params, opt_state), _ = jax.lax.scan(step, (params, opt_state),
                                            order.reshape(steps_per_epoch, batch_size))
      auc = val_auroc(params)
      better = auc > best_auc
      best = jax.tree.map(lambda new, old: jnp.where(better, new, old), params, best)
      return (params, opt_state, best, jnp.maximum(auc, best_auc)), auc

    carry = (params, opt_state, params, jnp.asarray(-1.0))
    (_, _, best, best_auc), _ = jax.lax.scan(epoch, carry, jax.random.split(order_key, epochs))
    return best, best_auc

  best, best_auc = jax.vmap(one_seed)(seeds)
  return best["w"], best["b"], best_auc


def predict_proba(w, b, x):
  """Class probabilities of every seed's probe: [S, n, C]."""
  return jax.nn.softmax(jnp.einsum("nd,sdc->snc", x, w) + b[:, None, :])
