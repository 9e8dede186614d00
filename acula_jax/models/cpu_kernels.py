"""Kernels written for XLA:CPU, chosen where a program is compiled for CPU (or asked for by name).

On accelerators the plain code is used (`jax.nn.dot_product_attention`, `jax.nn.gelu`, a float32
LayerNorm, `nnx.Conv`); `attention` and `layers` pick these with `jax.lax.platform_dependent`, so a step
traced on this machine and compiled for a TPU topology never contains them.

Blocked attention. On CPU `jax.nn.dot_product_attention` materialises the [B, heads, N, N] scores and
probabilities and keeps the probabilities for the backward pass: at OPERA-GT's 1025 tokens that is
4.2 MB per head, example and layer, 2-3x slower than PyTorch's CPU flash attention, and most of the
step's memory. `blocked_attention` is the flash-attention recipe written in jnp: queries in blocks of at
most `block_size` rows (a `lax.map` in the forward, a `lax.scan` in the backward), a few examples per
block so that its scores stay in cache, only the output and the row log-sum-exp saved, and the
probabilities recomputed in the backward pass. Every product is a plain [.., m, k] x [.., k, n] matmul
(keys and values are transposed once, outside the loop), the layout XLA:CPU's matmul library is
fastest on. Logits, softmax and accumulation run in float32 whatever the input dtype. Measured in
`benchmarks/attention.py` (BENCHMARKS.md).

GELU and LayerNorm with hand-written backward passes. Their automatic derivatives keep every
intermediate of the forward pass: for exact GELU four tensors as wide as the MLP's hidden layer per
block, for LayerNorm the centred and normalised copies of its input, each also written into a
[depth, ...] stack under the scan over blocks. These save only what the derivative needs (GELU: its
input; LayerNorm: its input and two per-row statistics) and recompute the rest. Same values and
gradients to float32 rounding; the OPERA-GT train step on CPU is 1.11-1.20x faster with 39% less XLA
temporary memory (benchmarks/layers_ab.py, BENCHMARKS.md).

Shifted depthwise convolution. XLA:CPU runs convolutions with feature_group_count == channels 25-100x
slower than torch at EfficientNet-B0's shapes (forward + backward); as k*k shifted slices times
per-channel weights, summed, it fuses into one elementwise loop, 4-35x faster than XLA's convolution
there (OPERA-CE's `DepthwiseConv`).
"""
import functools
import math

import jax
import jax.numpy as jnp

DEFAULT_BLOCK_SIZE = 128
# Scores per loop step: 12 heads x 128 queries x 1025 keys, 6.3 MB of float32, sit in cache
# (the fastest of 64/128/256 queries x 6/12/24/48 heads at OPERA-GT's shapes).
TARGET_BLOCK_ELEMENTS = 12 * 128 * 1025

_SQRT_HALF = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@jax.custom_vjp
def gelu(x):
  """Exact (erf) GELU, x * Phi(x): torch's nn.GELU() default and `jax.nn.gelu(approximate=False)`."""
  return 0.5 * x * (1.0 + jax.lax.erf(x * _SQRT_HALF))


def _gelu_forward(x):
  return gelu(x), x


def _gelu_backward(x, grad):
  # d/dx x Phi(x) = Phi(x) + x phi(x), recomputed from the saved input.
  cdf = 0.5 * (1.0 + jax.lax.erf(x * _SQRT_HALF))
  pdf = jnp.exp(-0.5 * x * x) * _INV_SQRT_2PI
  return (grad * (cdf + x * pdf),)


gelu.defvjp(_gelu_forward, _gelu_backward)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def layer_norm(x, scale, bias, epsilon, out_dtype):
  """(x - mean) / sqrt(var + epsilon) * scale + bias over the last axis, statistics in float32."""
  return _layer_norm_forward(x, scale, bias, epsilon, out_dtype)[0]


def _layer_norm_forward(x, scale, bias, epsilon, out_dtype):
  x32 = x.astype(jnp.float32)
  mean = jnp.mean(x32, axis=-1, keepdims=True)
  centred = x32 - mean
  inv_std = jax.lax.rsqrt(jnp.mean(centred * centred, axis=-1, keepdims=True) + epsilon)
  out = centred * inv_std * scale.astype(jnp.float32) + bias.astype(jnp.float32)
  return out.astype(out_dtype), (x, mean, inv_std, scale, bias)


def _layer_norm_backward(epsilon, out_dtype, residuals, grad):
  del epsilon, out_dtype
  x, mean, inv_std, scale, bias = residuals
  normed = (x.astype(jnp.float32) - mean) * inv_std
  grad = grad.astype(jnp.float32)
  grad_normed = grad * scale.astype(jnp.float32)
  # The standard LayerNorm input gradient: remove the mean of the incoming gradient and its
  # projection onto the normalised input, then undo the scaling.
  d_x = inv_std * (grad_normed - jnp.mean(grad_normed, axis=-1, keepdims=True)
                   - normed * jnp.mean(grad_normed * normed, axis=-1, keepdims=True))
  batch_axes = tuple(range(x.ndim - 1))
  d_scale = jnp.sum(grad * normed, axis=batch_axes)
  d_bias = jnp.sum(grad, axis=batch_axes)
  return d_x.astype(x.dtype), d_scale.astype(scale.dtype), d_bias.astype(bias.dtype)


layer_norm.defvjp(_layer_norm_forward, _layer_norm_backward)


def blocked_attention_bnhd(q, k, v, *, block_size=DEFAULT_BLOCK_SIZE):
  """`blocked_attention` for [B, N, heads, d] inputs (jax.nn.dot_product_attention's layout), a group of
  examples per loop step."""
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


def shifted_depthwise_conv(x, kernel, strides, padding):
  """NHWC depthwise convolution (kernel [k_h, k_w, 1, C]) as k*k strided slices times per-channel
  weights: nnx.Conv(feature_group_count=C)'s products, summed in another order."""
  (k_h, k_w, _, _), (s_h, s_w) = kernel.shape, strides
  x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
  out_h, out_w = (x.shape[1] - k_h) // s_h + 1, (x.shape[2] - k_w) // s_w + 1
  out = None
  for i in range(k_h):
    for j in range(k_w):
      tap = x[:, i:i + s_h * (out_h - 1) + 1:s_h, j:j + s_w * (out_w - 1) + 1:s_w] * kernel[i, j, 0]
      out = tap if out is None else out + tap
  return out
