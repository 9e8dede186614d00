"""OPERA's downstream heads as jitted JAX programs vectorised over seeds, and the metrics they report.

Classification (OPERA's `LinearHead`): frozen features -> one linear layer initialised N(0, 0.01)
with zero bias, cross-entropy plus `l2 * sum(param^2)` in the loss, the whole gradient clipped to
global norm `clip`, Adam with its learning rate multiplied by `decay` after every epoch, `epochs`
epochs of shuffled mini-batches, and the parameters of the epoch with the best validation macro
AUROC kept (OPERA's best-validation checkpoint). Every seed changes the initialisation and batch order.

Regression (OPERA's `LinearHeadR` with head="mlp"): Linear(d, d) -> ReLU -> Linear(d, 1), the
output de-standardised by the training targets' mean and std, MSE plus the same L2 term, the same
optimiser, and the epoch with the best validation MAE kept. `fit_ols` is the least-squares fit
(minimum-norm when under-determined) that OPERA's MMLung protocol uses (sklearn LinearRegression).

Metrics (`auroc`, `mae`, `mape`) are plain numpy, checked against scikit-learn in the tests.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

INIT_STD = 0.01  # OPERA's weights_init: N(0, 0.01) weights, zero biases
# OPERA's linear-probe protocol: Adam, learning rate decayed x0.97 per epoch, L2 on the weights,
# 64 epochs, batches of 64, averaged over 5 seeds. linear_probe.default_config()'s probe starts here.
OPERA_PROTOCOL = dict(learning_rate=1e-4, decay=0.97, l2=1e-5, epochs=64, batch_size=64, seeds=5)
# The heads are small programs compiled once per task, feature width and fold shape. Without LLVM's
# optimisations and XLA's fusion emitters they compile about 6x faster on a 2-core CPU (5.3 s -> 0.8 s
# for 2000 x 384 features, 64 epochs, 5 seeds) and run about 3x slower (1.4 s -> 4.2 s): a net win
# even at that size, and most folds are far smaller. Results are the same up to float rounding.
# These are XLA:CPU's options: programs for other platforms compile with the defaults.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True,
                "xla_cpu_use_fusion_emitters": False}


def jit_fast_on_cpu(static_argnames):
  """jax.jit that compiles with `FAST_COMPILE` when the program is for CPU: the platform of the
  device that holds the first array argument (where the program runs), else of the default device."""
  def decorate(fn):
    per_platform = {
        "cpu": jax.jit(fn, static_argnames=static_argnames, compiler_options=FAST_COMPILE),
        "other": jax.jit(fn, static_argnames=static_argnames)}

    @functools.wraps(fn)
    def run(*args, **kwargs):
      arrays = [a for a in args if isinstance(a, jax.Array)]
      device = next(iter(arrays[0].devices())) if arrays else jax.devices()[0]
      return per_platform["cpu" if device.platform == "cpu" else "other"](*args, **kwargs)
    return run
  return decorate


def _weighted_auroc_jax(score, positive_weight, negative_weight):
  """(AUROC, defined?) of one binary problem with row weights: a pair counts w_i * w_j, ties 1/2."""
  order = jnp.argsort(score)
  ordered, pos, neg = score[order], positive_weight[order], negative_weight[order]
  negatives_upto = jnp.concatenate([jnp.zeros(1, neg.dtype), jnp.cumsum(neg)])
  below = negatives_upto[jnp.searchsorted(ordered, ordered, side="left")]
  tied = negatives_upto[jnp.searchsorted(ordered, ordered, side="right")] - below
  pairs = pos.sum() * neg.sum()
  return (pos * (below + 0.5 * tied)).sum() / jnp.maximum(pairs, 1e-12), pairs > 0


def macro_auroc(scores, labels, num_classes: int, weights=None):
  """Macro one-vs-rest AUROC (ties count 1/2) in JAX, matching sklearn's roc_auc_score.

  Binary tasks (num_classes == 2) score class 1 only, as sklearn does. Rows count `weights` times
  (default once; 0 leaves a row out). Classes without positives or negatives are left out of the mean.
  """
  weights = jnp.ones(labels.shape, scores.dtype) if weights is None else weights
  classes = jnp.arange(1, 2) if num_classes == 2 else jnp.arange(num_classes)
  positives = (labels[None, :] == classes[:, None]).astype(scores.dtype)
  aucs, valid = jax.vmap(_weighted_auroc_jax)(scores[:, classes].T, positives * weights, (1 - positives) * weights)
  valid = valid.astype(jnp.float32)
  return (aucs * valid).sum() / jnp.maximum(valid.sum(), 1.0)


def standardize(train, *others):
  """Z-scores every array with the training features' statistics."""
  mean, std = train.mean(0), train.std(0) + 1e-6
  return [(x - mean) / std for x in (train, *others)]


def _adam(clip):
  """Clip the full gradient (L2 term included, as Lightning's gradient_clip_val), then Adam's direction;
  `_fit` applies the learning rate, decayed per epoch."""
  return optax.chain(optax.clip_by_global_norm(clip), optax.scale_by_adam())


def _l2(params, names):
  return sum(jnp.sum(params[k] ** 2) for k in names)


def _fit(init, loss_fn, score_fn, order, *, seed, epochs, steps_per_epoch, batch_size, learning_rate, decay,
         clip, active_steps=None):
  """Adam epochs on loss_fn(params, rows) with the learning rate multiplied by `decay` after each epoch;
  each epoch's rows come from order(key, length); the parameters of the epoch with the best score_fn
  are kept: (best params, best score). Only the first `active_steps` (default all) of an epoch's
  `steps_per_epoch` update anything: folds of other sizes in one vmapped program take their own count.
  """
  tx = _adam(clip)
  active_steps = steps_per_epoch if active_steps is None else active_steps
  init_key, order_key = jax.random.split(jax.random.key(seed))
  params = init(init_key)
  opt_state = tx.init(params)

  def step(carry, inputs):
    params, opt_state, rate = carry
    rows, index = inputs
    direction, new_state = tx.update(jax.grad(loss_fn)(params, rows), opt_state, params)
    active = index < active_steps
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(active, a, b), new, old)
    params = keep(jax.tree.map(lambda p, d: p - rate * d, params, direction), params)
    return (params, keep(new_state, opt_state), rate), None

  def epoch(carry, inputs):
    params, opt_state, best, best_score = carry
    key, number = inputs
    rows = order(key, steps_per_epoch * batch_size).reshape(steps_per_epoch, batch_size)
    rate = learning_rate * decay ** number
    (params, opt_state, _), _ = jax.lax.scan(step, (params, opt_state, rate), (rows, jnp.arange(steps_per_epoch)))
    score = score_fn(params)
    better = score > best_score
    best = jax.tree.map(lambda new, old: jnp.where(better, new, old), params, best)
    return (params, opt_state, best, jnp.maximum(score, best_score)), None

  carry = (params, opt_state, params, jnp.asarray(-jnp.inf))
  inputs = (jax.random.split(order_key, epochs), jnp.arange(epochs))
  (_, _, best, best_score), _ = jax.lax.scan(epoch, carry, inputs)
  return best, best_score


def _training_order(key, num_train, slots: int, length: int):
  """`length` slot indices: a fresh random order of the first `num_train` of `slots`, wrapped around.

  The order sorts per-slot uniforms; JAX's counter-based (partitionable) threefry draws a prefix of
  them identically whatever `slots` is, so a fold's batches do not depend on the folds beside it.
  """
  noise = jnp.where(jnp.arange(slots) < num_train, jax.random.uniform(key, (slots,)), jnp.inf)
  return jnp.argsort(noise)[jnp.arange(length) % num_train]


def _standardizer(x, row_weights):
  """(mean, std) of x's rows weighted by `row_weights` (training rows 1, others 0), as `standardize`."""
  n = row_weights.sum()
  mean = row_weights @ x / n
  var = jnp.maximum(row_weights @ (x * x) / n - mean * mean, 0.0)
  return mean, jnp.sqrt(var) + 1e-6


@jit_fast_on_cpu(static_argnames=("num_classes", "epochs", "batch_size", "decay"))
def train_probes(seeds, x, y, train_rows, num_train, val_rows, num_val, *, num_classes: int, epochs: int,
                 batch_size: int, learning_rate: float, decay: float, l2: float, clip: float = 1.0):
  """OPERA's linear probe for every fold and seed at once; class probabilities of every row.

  x [N, d] raw features of all rows, y [N] class indices; per fold f: train_rows[f] [T] the training
  rows (padded to T, the first num_train[f] real), val_rows[f] [V] its validation rows (padded, the
  first num_val[f] real).
  Each fold trains exactly as OPERA's probe on its own rows: features standardised with its training
  statistics, batches of min(batch, n) rows, ceil(n / batch) steps per epoch (a program's epoch has
  the largest fold's count of steps; a smaller fold's extra steps change nothing). Returns
  ([F, S, N, C] probabilities of the best-validation epoch, [F, S] best validation AUROCs).
  """
  slots = train_rows.shape[1]
  batch_size = min(batch_size, slots)
  steps_per_epoch = -(-slots // batch_size)

  def one_fold(rows, n, val, n_val):
    row_weights = jnp.zeros(x.shape[0], x.dtype).at[rows].add((jnp.arange(slots) < n).astype(x.dtype))
    mean, std = _standardizer(x, row_weights)
    standardized = lambda idx: (x[idx] - mean) / std
    # A fold smaller than a batch trains on batches of its n rows, as OPERA's (the rest weigh 0).
    in_batch = (jnp.arange(batch_size) < jnp.minimum(n, batch_size)).astype(x.dtype)

    def init(key):
      return {"w": INIT_STD * jax.random.normal(key, (x.shape[1], num_classes)), "b": jnp.zeros((num_classes,))}

    def loss_fn(params, idx):
      logits = standardized(idx) @ params["w"] + params["b"]
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, y[idx])
      return (ce * in_batch).sum() / in_batch.sum() + l2 * _l2(params, "wb")

    def probabilities(params, idx=None):
      features = (x - mean) / std if idx is None else standardized(idx)
      return jax.nn.softmax(features @ params["w"] + params["b"])

    val_weights = (jnp.arange(val.shape[0]) < n_val).astype(x.dtype)

    def val_auroc(params):
      return macro_auroc(probabilities(params, val), y[val], num_classes, val_weights)

    def one_seed(seed):
      order = lambda key, length: rows[_training_order(key, n, slots, length)]
      best, best_score = _fit(init, loss_fn, val_auroc, order, seed=seed, epochs=epochs,
                              steps_per_epoch=steps_per_epoch, batch_size=batch_size, learning_rate=learning_rate,
                              decay=decay, clip=clip, active_steps=-(-n // jnp.minimum(n, batch_size)))
      return probabilities(best), best_score

    return jax.vmap(one_seed)(seeds)

  return jax.vmap(one_fold)(train_rows, num_train, val_rows, num_val)


# Logistic regression's inverse regularisation strengths searched by the inner cross-validation.
LOGREG_C_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


@functools.partial(jax.jit, static_argnames=("num_classes", "iterations"))
def fit_logistic_path(x, y, train_weights, inverse_regularization, *, num_classes: int, iterations: int = 100):
  """L2 logistic regressions for every row of train_weights [F, N] (1 = a training row) and every C of
  an ascending grid [G]; returns [G, F, N, num_classes] probabilities of all rows.

  sklearn's objective, C * sum_i w_i CE_i + |W|^2 / 2 with the intercept unpenalised (one logit vector
  for two classes, softmax over all classes otherwise), on features standardised with each fit's own
  training rows. The F fits of one C are one separable problem for L-BFGS (`iterations` steps): large
  matrix products instead of F small ones, and one conditioning per C. Each C starts from the
  previous C's solution (a regularisation path), so weakly regularised fits converge in as few steps.
  """
  outputs = 1 if num_classes == 2 else num_classes
  n = train_weights.sum(1)
  mean, std = jax.vmap(_standardizer, in_axes=(None, 0))(x, train_weights)

  def logits(params):
    w = params["w"] / std[:, :, None]                                       # [F, d, outputs]
    z = jnp.einsum("nd,fdk->fnk", x, w) + (params["b"] - jnp.einsum("fd,fdk->fk", mean, w))[:, None, :]
    return jnp.concatenate([jnp.zeros_like(z), z], axis=-1) if outputs == 1 else z

  def solve(params, c):
    def objective(params):  # the sum over fits of sklearn's objective divided by C * n (same minimisers)
      ce = optax.softmax_cross_entropy_with_integer_labels(logits(params), y[None, :])
      return jnp.sum((train_weights * ce).sum(1) / n + jnp.sum(params["w"] ** 2, axis=(1, 2)) / (2 * c * n))

    solver = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(objective)

    def step(carry, _):
      params, state = carry
      value, grad = value_and_grad(params, state=state)
      updates, state = solver.update(grad, state, params, value=value, grad=grad, value_fn=objective)
      return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, solver.init(params)), None, length=iterations)
    return params, jax.nn.softmax(logits(params))

  folds = train_weights.shape[0]
  params = {"w": jnp.zeros((folds, x.shape[1], outputs)), "b": jnp.zeros((folds, outputs))}
  _, probabilities = jax.lax.scan(solve, params, inverse_regularization)
  return probabilities


def predict_proba(w, b, x):
  """Class probabilities of every seed's probe: [S, n, C]."""
  return jax.nn.softmax(jnp.einsum("nd,sdc->snc", x, w) + b[:, None, :])


@jit_fast_on_cpu(static_argnames=("hidden", "epochs", "batch_size", "decay"))
def train_regressors(seeds, x_train, y_train, x_val, y_val, *, hidden: int, epochs: int, batch_size: int,
                     learning_rate: float, decay: float, l2: float, clip: float = 1.0):
  """Trains one MLP regression head per seed; returns best-validation params (stacked) and val MAEs."""
  dim = x_train.shape[1]
  batch_size = min(batch_size, x_train.shape[0])
  # OPERA de-standardises the head's output with the training targets' statistics.
  mean, std = y_train.mean(), jnp.maximum(y_train.std(), 1e-6)

  def init(key):
    k1, k2 = jax.random.split(key)
    return {"w1": INIT_STD * jax.random.normal(k1, (dim, hidden)), "b1": jnp.zeros((hidden,)),
            "w2": INIT_STD * jax.random.normal(k2, (hidden, 1)), "b2": jnp.zeros((1,))}

  def forward(params, x):
    return _mlp(params, x) * std + mean

  def loss_fn(params, rows):
    return (jnp.mean((forward(params, x_train[rows]) - y_train[rows]) ** 2)
            + l2 * _l2(params, ("w1", "b1", "w2", "b2")))

  def neg_val_mae(params):
    return -jnp.mean(jnp.abs(forward(params, x_val) - y_val))

  n = x_train.shape[0]
  # A fresh permutation per epoch, wrapped around so every step has a full batch.
  order = lambda key, length: jnp.resize(jax.random.permutation(key, n), (length,))

  def one_seed(seed):
    return _fit(init, loss_fn, neg_val_mae, order, seed=seed, epochs=epochs, steps_per_epoch=-(-n // batch_size),
                batch_size=batch_size, learning_rate=learning_rate, decay=decay, clip=clip)

  best, best_score = jax.vmap(one_seed)(seeds)
  best["mean"], best["std"] = jnp.broadcast_to(mean, seeds.shape), jnp.broadcast_to(std, seeds.shape)
  return best, -best_score


def _mlp(params, x):
  return (jax.nn.relu(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"])[..., 0]


def predict_regression(params, x):
  """Predictions of every seed's regression head: [S, n]."""
  one = lambda p: _mlp(p, x) * p["std"] + p["mean"]
  return jax.vmap(one)(params)


def fit_ols(x, y):
  """Least squares with intercept (minimum-norm when d > n), as sklearn's LinearRegression: (w, b)."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  x_mean, y_mean = x.mean(0), y.mean()
  w, *_ = np.linalg.lstsq(x - x_mean, y - y_mean, rcond=None)
  return w, y_mean - x_mean @ w


def predict_ols(w, b, x):
  return np.asarray(x, np.float64) @ w + b


# ----------------------------------------------------------------------------------------------------
# Metrics (numpy).
# ----------------------------------------------------------------------------------------------------

def weighted_auroc(score, positive, weights) -> np.ndarray:
  """Binary AUROC of one score vector under each row of `weights` [B, n]: [B] (NaN where undefined).

  The Mann-Whitney statistic with a pair (i, j) counted w_i * w_j times and ties counting 1/2: with
  integer weights, exactly sklearn's roc_auc_score on the rows repeated that often (a bootstrap
  resample). One sort serves every weight row.
  """
  score, positive = np.asarray(score, np.float64), np.asarray(positive, bool)
  order = np.argsort(score, kind="mergesort")
  starts = np.r_[0, np.flatnonzero(np.diff(score[order])) + 1]  # first row of each group of tied scores
  weights = np.asarray(weights, np.float64)[:, order]
  pos = np.add.reduceat(weights * positive[order], starts, axis=1)
  neg = np.add.reduceat(weights * ~positive[order], starts, axis=1)
  negatives_below = np.cumsum(neg, axis=1) - neg
  pairs = pos.sum(1) * neg.sum(1)
  wins = (pos * (negatives_below + 0.5 * neg)).sum(1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(pairs > 0, wins / pairs, np.nan)


def weighted_macro_auroc(probabilities, labels, num_classes: int, weights) -> np.ndarray:
  """Macro one-vs-rest AUROC under each weight row ([B]); classes without both sides are left out."""
  probabilities, labels = np.asarray(probabilities, np.float64), np.asarray(labels)
  classes = [1] if num_classes == 2 else range(num_classes)
  per_class = np.stack([weighted_auroc(probabilities[:, c], labels == c, weights) for c in classes])
  defined = np.isfinite(per_class)
  with np.errstate(invalid="ignore"):
    return np.where(defined.any(0), np.nansum(per_class, 0) / defined.sum(0), np.nan)


def auroc(probabilities, labels, num_classes: int) -> float:
  """Macro one-vs-rest AUROC over the classes present (with negatives) in `labels`; class 1 if binary.

  NaN when no class has both positives and negatives.
  """
  ones = np.ones((1, len(labels)))
  return float(weighted_macro_auroc(probabilities, labels, num_classes, ones)[0])


def mae(y_true, y_pred) -> float:
  return float(np.mean(np.abs(np.asarray(y_pred, np.float64) - np.asarray(y_true, np.float64))))


def mape(y_true, y_pred) -> float:
  """Mean absolute percentage error in percent (sklearn's fraction x 100; |y| floored at eps as sklearn)."""
  y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
  denominator = np.maximum(np.abs(y_true), np.finfo(np.float64).eps)
  return float(100.0 * np.mean(np.abs(y_pred - y_true) / denominator))


def roc_curve(score, positive):
  """(fpr, tpr) points of a binary ROC curve, thresholds at each distinct score (ties grouped)."""
  score, positive = np.asarray(score, np.float64), np.asarray(positive, bool)
  order = np.argsort(-score, kind="mergesort")
  score, positive = score[order], positive[order]
  last_of_tie = np.r_[np.diff(score) != 0, True]
  tps = np.cumsum(positive)[last_of_tie]
  fps = np.cumsum(~positive)[last_of_tie]
  tpr = np.r_[0.0, tps / max(positive.sum(), 1)]
  fpr = np.r_[0.0, fps / max((~positive).sum(), 1)]
  return fpr, tpr
