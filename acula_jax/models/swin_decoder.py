"""The Swin MAE decoder of OPERA-GT and AudioMAE, in Flax NNX.

AudioMAE (Huang et al., 2022) decodes masked spectrograms with 16 Swin blocks
of the "v2-cr" kind (timm's `swin_transformer_v2_cr`, copied into AudioMAE's
`timm_patch` and OPERA's `mae_utils/swin_transformer.py`):

  x = x + norm1(window_attention(x))     post-norm, unlike ViT blocks
  x = x + norm2(mlp(x))

with scaled cosine attention (cos(q, k) / max(tau, 0.01), a learnable
temperature per head) and a continuous relative-position bias produced by a
small meta network (2 -> 384 -> heads, ReLU) from log-spaced relative
coordinates. Blocks alternate window shifts of (0, 0) and (2, 0) with 4x4
windows. The cls token is dropped before the blocks, so they see the N patch
tokens only and `decoder_pred` maps each token to its 16 (= 4 x 4) values.

Layout. Both references turn the token sequence [B, L, C] into an "image"
with `x.view(B, H, W, -1)` where (H, W) is the block's `feat_size`:

* AudioMAE uses the patch grid (64, 8), so H * W == L and every window is a
  real 4 x 4 patch neighbourhood ("grid" layout).
* OPERA-GT uses (32, 8) with 256-wide tokens, so H * W == C and the view is
  (B, 32, 8, L): each "pixel" holds 4 consecutive tokens, the 16 tokens of one
  attention window are one time row of 16 patches, and the reverse reshape
  does not invert the forward one. That is what the released OPERA-GT decoder
  was trained with, so `opera_feat_size` reproduces it exactly rather than
  "fixing" it.

This module copies the reference's reshapes verbatim (reshape == torch view on
contiguous arrays), so both layouts give bit-compatible results for converted
weights. The shift mask is added per window index modulo the mask count, as in
the reference. Not reproduced: the meta network's dropout (p=0.1 in the
reference's training mode); the decoder only serves the MAE regulariser.
"""

import functools

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from acula_jax.models import layers

_LN_EPS = 1e-6  # the MAE models build these blocks with LayerNorm(eps=1e-6)
_MASK_VALUE = -100.0  # the reference's value for cross-region pairs


def opera_feat_size(width):
  """OPERA-GT's `feat_size`: (width // 8, 8), i.e. (32, 8) at width 256."""
  if width % 8:
    raise ValueError(f"OPERA's Swin decoder layout needs a width divisible by 8, got {width}")
  return (width // 8, 8)


def _calc_window_shift(feat_size, window_size, shift_size):
  """Shrinks the window to the feature size and drops shifts that cannot apply."""
  window = tuple(f if f <= w else w for f, w in zip(feat_size, window_size))
  shift = tuple(0 if f <= w else s for f, w, s in zip(feat_size, window, shift_size))
  return window, shift


def window_partition(x, window):
  """[B, H, W, C] -> [B * nW, wh, ww, C], windows row-major over (H, W)."""
  b, h, w, c = x.shape
  wh, ww = window
  x = x.reshape(b, h // wh, wh, w // ww, ww, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(-1, wh, ww, c)


def window_reverse(windows, window, feat_size):
  """Inverse of `window_partition` for a (H, W) = feat_size image."""
  h, w = feat_size
  wh, ww = window
  c = windows.shape[-1]
  x = windows.reshape(-1, h // wh, w // ww, wh, ww, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(-1, h, w, c)


@functools.lru_cache(maxsize=None)
def shift_mask(feat_size, window, shift):
  """[nW, N, N] additive mask (0 within a region, -100 across), or None."""
  if not any(shift):
    return None
  h, w = feat_size
  region = np.zeros((1, h, w, 1), np.float32)
  label = 0
  for hs in (slice(0, -window[0]), slice(-window[0], -shift[0]), slice(-shift[0], None)):
    for ws in (slice(0, -window[1]), slice(-window[1], -shift[1]), slice(-shift[1], None)):
      region[:, hs, ws, :] = label
      label += 1
  windows = np.asarray(window_partition(region, window)).reshape(-1, window[0] * window[1])
  diff = windows[:, None, :] - windows[:, :, None]
  mask = np.where(diff != 0, _MASK_VALUE, 0.0).astype(np.float32)
  mask.flags.writeable = False  # shared through the cache
  return mask


@functools.lru_cache(maxsize=None)
def log_relative_coords(window):
  """[N * N, 2] sign(d) * log(1 + |d|) of pairwise (row, col) offsets."""
  rows, cols = np.meshgrid(np.arange(window[0]), np.arange(window[1]), indexing="ij")
  coords = np.stack([rows.ravel(), cols.ravel()])  # [2, N]
  rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0).reshape(-1, 2)
  out = (np.sign(rel) * np.log1p(np.abs(rel))).astype(np.float32)
  out.flags.writeable = False
  return out


def _dense(in_dim, out_dim, *, dtype, rngs, use_bias=True):
  # The MAE models initialise every Linear with xavier-uniform.
  return nnx.Linear(
      in_dim, out_dim, use_bias=use_bias, dtype=dtype, rngs=rngs,
      kernel_init=nnx.initializers.xavier_uniform(),
      bias_init=nnx.initializers.zeros_init())


class MetaMlp(nnx.Module):
  """2 -> hidden -> heads with ReLU: relative coordinates to position bias."""

  def __init__(self, num_heads, hidden=384, *, rngs):
    self.fc1 = _dense(2, hidden, dtype=jnp.float32, rngs=rngs)
    self.fc2 = _dense(hidden, num_heads, dtype=jnp.float32, rngs=rngs)

  def __call__(self, coords):
    return self.fc2(jax.nn.relu(self.fc1(coords)))


class CosineWindowAttention(nnx.Module):
  """Scaled cosine attention inside windows, with a meta-network position bias."""

  def __init__(self, width, num_heads, window, *, dtype, rngs):
    if width % num_heads:
      raise ValueError(f"width {width} is not divisible by num_heads {num_heads}")
    self.num_heads = num_heads
    self.window = tuple(window)
    self.qkv = _dense(width, 3 * width, dtype=dtype, rngs=rngs)
    self.proj = _dense(width, width, dtype=dtype, rngs=rngs)
    self.meta_mlp = MetaMlp(num_heads, rngs=rngs)
    self.tau = nnx.Param(jnp.ones((num_heads,), jnp.float32))

  def position_bias(self):
    """[heads, N, N] bias from the meta network (float32)."""
    n = self.window[0] * self.window[1]
    bias = self.meta_mlp(jnp.asarray(log_relative_coords(self.window)))
    return bias.T.reshape(self.num_heads, n, n)

  def __call__(self, x, mask=None):
    """x: [Bw, N, C]; mask: [nW, N, N] or None with Bw a multiple of nW."""
    bw, n, c = x.shape
    qkv = self.qkv(x).reshape(bw, n, 3, self.num_heads, c // self.num_heads)
    q, k, v = (qkv[:, :, i].astype(jnp.float32).transpose(0, 2, 1, 3) for i in range(3))
    denom = (jnp.linalg.norm(q, axis=-1)[..., :, None] * jnp.linalg.norm(k, axis=-1)[..., None, :])
    logits = jnp.einsum("bhqd,bhkd->bhqk", q, k) / jnp.maximum(denom, 1e-6)
    logits = logits / jnp.maximum(self.tau[...], 0.01)[None, :, None, None]
    logits = logits + self.position_bias()[None]
    if mask is not None:
      nw = mask.shape[0]
      logits = logits.reshape(bw // nw, nw, self.num_heads, n, n) + jnp.asarray(mask)[None, :, None]
      logits = logits.reshape(bw, self.num_heads, n, n)
    attn = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum("bhqk,bhkd->bqhd", attn, v).reshape(bw, n, c)
    return self.proj(out.astype(x.dtype))


class Mlp(nnx.Module):
  """Linear -> exact GELU -> Linear: the MLP of every transformer block here (ViT, Swin, decoders).

  `dense` builds the Linear layers, so each model keeps its reference initialisation.
  """

  def __init__(self, width, hidden, *, dtype, rngs, dense=None):
    dense = dense or _dense
    self.fc1 = dense(width, hidden, dtype=dtype, rngs=rngs)
    self.fc2 = dense(hidden, width, dtype=dtype, rngs=rngs)

  def __call__(self, x):
    return self.fc2(layers.gelu(self.fc1(x)))


class SwinDecoderBlock(nnx.Module):
  """One post-norm Swin-v2-cr block over a [B, L, C] token sequence."""

  def __init__(self, width, num_heads, *, feat_size, window_size=(4, 4), shift_size=(0, 0),
               mlp_ratio=4.0, dtype=jnp.float32, rngs):
    self.feat_size = tuple(feat_size)
    self.window, self.shift = _calc_window_shift(self.feat_size, tuple(window_size), tuple(shift_size))
    if self.feat_size[0] % self.window[0] or self.feat_size[1] % self.window[1]:
      raise ValueError(f"feat_size {self.feat_size} is not a multiple of the window {self.window}")
    self.attn = CosineWindowAttention(width, num_heads, self.window, dtype=dtype, rngs=rngs)
    self.norm1 = layers.LayerNorm(width, epsilon=_LN_EPS, dtype=dtype, rngs=rngs)
    self.mlp = Mlp(width, int(width * mlp_ratio), dtype=dtype, rngs=rngs)
    self.norm2 = layers.LayerNorm(width, epsilon=_LN_EPS, dtype=dtype, rngs=rngs)

  def _check(self, b, l, c):
    h, w = self.feat_size
    n = self.window[0] * self.window[1]
    num_windows = (h // self.window[0]) * (w // self.window[1])
    if (l * c) % (h * w) or (b * l) % n or ((b * l) // n) % num_windows:
      raise ValueError(
          f"Swin decoder with feat_size {self.feat_size} and window {self.window} cannot "
          f"take {b} x {l} tokens of width {c} (the reference's reshapes need "
          f"L*C % (H*W) == 0 and B*L a multiple of {n * num_windows})")

  def _window_attention(self, x):
    b, l, c = x.shape
    self._check(b, l, c)
    sh, sw = self.shift
    # The reference's `x.view(B, H, W, -1)`: see the module docstring.
    y = x.reshape(b, *self.feat_size, -1)
    if sh or sw:
      y = jnp.roll(y, (-sh, -sw), axis=(1, 2))
    y = window_partition(y, self.window).reshape(-1, self.window[0] * self.window[1], c)
    y = self.attn(y, shift_mask(self.feat_size, self.window, self.shift))
    y = window_reverse(y.reshape(-1, *self.window, c), self.window, self.feat_size)
    if sh or sw:
      y = jnp.roll(y, (sh, sw), axis=(1, 2))
    return y.reshape(b, l, c)

  def __call__(self, x):
    x = x + self.norm1(self._window_attention(x))
    return x + self.norm2(self.mlp(x))


def swin_decoder_blocks(width, depth=16, num_heads=16, mlp_ratio=4.0, *, feat_size,
                        window_size=(4, 4), shift=(2, 0), dtype=jnp.float32, rngs):
  """`depth` blocks, even ones unshifted and odd ones shifted by `shift`."""
  return nnx.List([
      SwinDecoderBlock(
          width, num_heads, feat_size=feat_size, window_size=window_size,
          shift_size=(0, 0) if i % 2 == 0 else shift, mlp_ratio=mlp_ratio,
          dtype=dtype, rngs=rngs)
      for i in range(depth)])
