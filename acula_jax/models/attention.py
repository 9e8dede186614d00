"""Softmax attention without masks: XLA's on accelerators, a query-blocked kernel on CPU.

"auto" picks by the platform the program is compiled for (`jax.lax.platform_dependent`), not by the
host's default backend: a step traced in a CPU process and compiled for a TPU topology gets XLA's
attention, and a CPU program gets the blocked kernel.

`jax.nn.dot_product_attention` lets XLA:GPU/TPU pick fused kernels, but on CPU it materialises the
[B, heads, N, N] scores and probabilities and keeps the probabilities for the backward pass: at
OPERA-GT's 1025 tokens that is 4.2 MB per head, example and layer, 2-3x slower than PyTorch's CPU
flash attention, and most of the step's memory. `blocked_attention` is the flash-attention recipe
written in jnp: queries in blocks of at most `block_size` rows (a `lax.map` in the forward, a
`lax.scan` in the backward), a few examples per block so that its scores stay in cache, only the
output and the row log-sum-exp saved, and the probabilities recomputed in the backward pass. Every
product is a plain [.., m, k] x [.., k, n] matmul (keys and values are transposed once, outside the
loop), the layout XLA:CPU's matmul library is fastest on. Logits, softmax and accumulation run in
float32 whatever the input dtype.

Measured in `benchmarks/attention.py` (forward + backward at OPERA-GT's shapes, CPU): see BENCHMARKS.md.
"""
import functools

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("auto", "xla", "blocked")
DEFAULT_BLOCK_SIZE = 128
# Scores per loop step: 12 heads x 128 queries x 1025 keys, 6.3 MB of float32, sit in cache
# (the fastest of 64/128/256 queries x 6/12/24/48 heads at OPERA-GT's shapes).
TARGET_BLOCK_ELEMENTS = 12 * 128 * 1025


def dot_product_attention(q, k, v, *, implementation="auto", block_size=DEFAULT_BLOCK_SIZE):
  """softmax(q k^T / sqrt(d)) v for [B, N, heads, d] inputs (jax.nn.dot_product_attention's layout).

  `implementation`: "xla" (jax.nn.dot_product_attention), "blocked" (this module's kernel) or "auto"
  (blocked when compiled for CPU, XLA's for any other platform).
  """
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"unknown attention implementation {implementation!r}; available: "
                     f"{', '.join(IMPLEMENTATIONS)}")
  if implementation == "auto":
    blocked = functools.partial(_blocked_attention, block_size=block_size)
    return jax.lax.platform_dependent(q, k, v, cpu=blocked, default=jax.nn.dot_product_attention)
  if implementation == "xla":
    return jax.nn.dot_product_attention(q, k, v)
  return _blocked_attention(q, k, v, block_size=block_size)


def _blocked_attention(q, k, v, *, block_size):
  """The [B, N, heads, d] layout around `blocked_attention`, a group of examples per loop step."""
  batch, n, heads, d = q.shape
  rows = query_rows_per_block(n, block_size)
  group = examples_per_block(batch, heads * rows * n)
  # [B, N, H, d] -> [B / group, group, H, N, d]: a group of examples per loop step, so that a
  # block of scores stays the same size (and in cache) whatever the batch.
  grouped = lambda x: jnp.swapaxes(x, 1, 2).astype(jnp.float32).reshape(
      batch // group, group, heads, n, d)
  out = jax.lax.map(lambda qkv: blocked_attention(*qkv, rows), (grouped(q), grouped(k), grouped(v)))
  return jnp.swapaxes(out.reshape(batch, heads, n, d), 1, 2).astype(q.dtype)


def query_rows_per_block(n, block_size):
  """Rows per block: ceil(n / block_size) near-equal blocks, rows a multiple of 8 (the matmul tiles).

  1025 queries -> 9 blocks of 120 (not 9 of 128); MAE's 308 visible -> 3 of 104 (not 3 of 128).
  """
  num_blocks = -(-n // block_size)
  return min(block_size, -(-n // (8 * num_blocks)) * 8)


def examples_per_block(batch, elements_per_example, target=TARGET_BLOCK_ELEMENTS):
  """The largest divisor of `batch` whose examples' scores fit in `target` elements (at least 1)."""
  fitting = max(1, target // elements_per_example)
  return max(g for g in range(1, min(batch, fitting) + 1) if batch % g == 0)


def _split_rows(x, block_size):
  """[B, H, N, ...] -> [num_blocks, B, H, block_size, ...], zero-padded to whole blocks."""
  n = x.shape[2]
  num_blocks = -(-n // block_size)
  pad = [(0, 0)] * x.ndim
  pad[2] = (0, num_blocks * block_size - n)
  x = jnp.pad(x, pad).reshape(*x.shape[:2], num_blocks, block_size, *x.shape[3:])
  return jnp.moveaxis(x, 2, 0)


def _join_rows(x, n):
  """Inverse of `_split_rows`: [num_blocks, B, H, block_size, ...] -> [B, H, n, ...]."""
  x = jnp.moveaxis(x, 0, 2)
  x = x.reshape(*x.shape[:2], x.shape[2] * x.shape[3], *x.shape[4:])
  return x[:, :, :n]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def blocked_attention(q, k, v, block_size=DEFAULT_BLOCK_SIZE):
  """Attention over [B, heads, N, d] float32 arrays, query-blocked (see the module docstring)."""
  return _forward(q, k, v, block_size)[0]


def _forward(q, k, v, block_size):
  n = q.shape[2]
  keys_t = jnp.swapaxes(k, -1, -2)  # [B, H, d, N]

  def one_block(q_block):
    scores = q_block @ keys_t
    row_max = jnp.max(scores, axis=-1, keepdims=True)
    probs = jnp.exp(scores - row_max)
    row_sum = jnp.sum(probs, axis=-1, keepdims=True)
    return (probs @ v) / row_sum, (row_max + jnp.log(row_sum))[..., 0]

  scaled_q = q * q.shape[-1] ** -0.5
  out, log_sum_exp = jax.lax.map(one_block, _split_rows(scaled_q, block_size))
  out, log_sum_exp = _join_rows(out, n), _join_rows(log_sum_exp, n)
  return out, (q, k, v, out, log_sum_exp)


def _backward(block_size, residuals, d_out):
  q, k, v, out, log_sum_exp = residuals
  n, scale = q.shape[2], q.shape[-1] ** -0.5
  keys_t, values_t = jnp.swapaxes(k, -1, -2), jnp.swapaxes(v, -1, -2)
  # Row sums of d_out * out: the softmax Jacobian's correction term, one number per query.
  correction = jnp.sum(d_out * out, axis=-1)

  def one_block(carry, block):
    d_keys_t, d_values_t = carry  # [B, H, d, N], accumulated over query blocks
    q_block, d_out_block, lse_block, correction_block = block
    probs = jnp.exp(q_block @ keys_t - lse_block[..., None])
    d_values_t += jnp.swapaxes(d_out_block, -1, -2) @ probs
    d_scores = probs * (d_out_block @ values_t - correction_block[..., None])
    d_keys_t += jnp.swapaxes(q_block, -1, -2) @ d_scores  # q_block is pre-scaled
    return (d_keys_t, d_values_t), (d_scores @ k) * scale

  zeros = jnp.zeros_like(keys_t)
  blocks = tuple(_split_rows(x, block_size) for x in (q * scale, d_out, log_sum_exp, correction))
  (d_keys_t, d_values_t), d_q = jax.lax.scan(one_block, (zeros, zeros), blocks)
  return _join_rows(d_q, n), jnp.swapaxes(d_keys_t, -1, -2), jnp.swapaxes(d_values_t, -1, -2)


blocked_attention.defvjp(_forward, _backward)
