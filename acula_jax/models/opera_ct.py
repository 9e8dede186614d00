"""OPERA-CT: a COLA-trained HTS-AT (Swin) audio tower, in Flax NNX.

OPERA-CT (Zhang et al., OPERA, 2024) is the HTS-AT audio transformer (Chen
et al., 2022) of `src/model/htsat`, used through `HTSATWrapper`, trained with
the COLA objective (see `opera_ce`). The path from a [B, T, 64] log-mel to
the 768-d feature, as HTS-AT's `forward` in its default (non-repeat,
non-infer) mode:

1. `bn0`: BatchNorm over the 64 mel bins (eps 1e-5, torch momentum 0.1).
2. If T < 1024 (= spec_size * freq_ratio), bicubic interpolation along time
   to 1024 frames (`F.interpolate(mode="bicubic", align_corners=True)`, cubic
   coefficient -0.75); T > 1024 is rejected here (HTS-AT crops in training
   and averages 1024-frame windows at hop 512 in evaluation).
3. `reshape_wav2img`: the 1024 x 64 map becomes a 256 x 256 image whose row
   r = 64 * j + f holds mel bin f of time chunk j (freq_ratio = 256 // 64 = 4
   chunks of 256 frames) and whose column is the frame within the chunk.
4. Patch embedding (4 x 4 conv, stride 4, width 96) + LayerNorm -> 64 x 64.
5. Four Swin stages, depths (2, 2, 6, 2), heads (4, 8, 16, 32), window 8,
   odd blocks shifted by 4, patch merging between stages (96 -> 768 wide,
   64 -> 8 tokens a side). The last stage is 8 x 8, no larger than the
   window, so it uses one 8 x 8 window and no shift (HTS-AT's rule).
6. Final LayerNorm.

Pooling. OPERA-CT's feature is HTS-AT's `latent_output` (the token-semantic
branch, `enable_tscam=True`): the normed [B, 64, 768] tokens are reshaped to
[B, 768, 8, 8], regrouped by frequency band (c_freq_bin = 8 // 4 = 2 rows per
band) into [B, 768, 2, 32], flattened and average-pooled over all 64
positions. The regrouping is a permutation, so the feature is exactly the
mean of the 64 final tokens after the final LayerNorm. The tscam conv and the
527-class head (AudioSet logits) do not feed it and are not converted.

Drop-path (linear 0 -> 0.1 over the 12 blocks, as HTS-AT) applies only when
`features` gets an `rng`; `ssl_forward` passes one.
"""

import functools

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from acula_jax import models
from acula_jax.models import layers
from acula_jax.models import opera_ce
from acula_jax.models import swin_decoder

_LN_EPS = 1e-5  # torch's nn.LayerNorm default, used throughout HTS-AT
_CUBIC_A = -0.75  # torch's bicubic coefficient

FRONTEND = "log_mel"  # the front end it reads (`audio.FRONTENDS`)
CONFIG = dict(
    mel_bins=64, spec_size=256, patch_size=4, embed_dim=96, depths=(2, 2, 6, 2),
    num_heads=(4, 8, 16, 32), window_size=8, mlp_ratio=4.0, drop_path_rate=0.1,
    bn_momentum=0.9, cola_dim=512, cola_dropout=0.1, crop_frames=128, augment=True)

# spec 128 (freq_ratio 2, 256 frames), window 16, stages 32 -> 16: shifted
# windows in the first, the "window = resolution" rule in the second.
TINY_CONFIG = dict(
    spec_size=128, embed_dim=8, depths=(2, 1), num_heads=(1, 2), window_size=16, cola_dim=16,
    crop_frames=64)


# ----------------------------------------------------------------------------
# Input: torch's bicubic resize and HTS-AT's reshape to an image.


def _cubic1(x):
  return ((_CUBIC_A + 2) * x - (_CUBIC_A + 3)) * x * x + 1


def _cubic2(x):
  return ((_CUBIC_A * x - 5 * _CUBIC_A) * x + 8 * _CUBIC_A) * x - 4 * _CUBIC_A


@functools.lru_cache(maxsize=None)
def bicubic_matrix(in_len, out_len):
  """[out_len, in_len] matrix of torch's 1-D bicubic resize, align_corners=True.

  Computed in float32 like torch's CPU kernel: source = i * (in - 1) / (out - 1),
  four taps around floor(source) with clamped indices.
  """
  scale = np.float32((in_len - 1) / (out_len - 1)) if out_len > 1 else np.float32(0)
  src = np.arange(out_len, dtype=np.float32) * scale
  base = np.floor(src)
  t = (src - base).astype(np.float32)
  weights = np.stack([_cubic2(t + 1), _cubic1(t), _cubic1(1 - t), _cubic2(2 - t)], axis=1)
  matrix = np.zeros((out_len, in_len), np.float64)
  rows = np.arange(out_len)
  for k in range(4):
    cols = np.clip(base.astype(np.int64) - 1 + k, 0, in_len - 1)
    np.add.at(matrix, (rows, cols), weights[:, k])
  matrix = matrix.astype(np.float32)
  matrix.flags.writeable = False
  return matrix


def wav2img(x, spec_size, freq_ratio):
  """[B, T * r, F] (T * r = spec_size * r) -> [B, r * F, T] image, HTS-AT's row order."""
  b, t, f = x.shape
  x = x.reshape(b, freq_ratio, t // freq_ratio, f).transpose(0, 1, 3, 2)
  return x.reshape(b, freq_ratio * f, t // freq_ratio)


# ----------------------------------------------------------------------------
# Swin encoder pieces (HTS-AT / Swin v1 layout).


def _dense(in_dim, out_dim, *, use_bias=True, dtype, rngs):
  # Swin/HTS-AT: trunc_normal(std=0.02) weights, zero biases.
  return nnx.Linear(
      in_dim, out_dim, use_bias=use_bias, dtype=dtype, rngs=rngs,
      kernel_init=nnx.initializers.truncated_normal(stddev=0.02),
      bias_init=nnx.initializers.zeros_init())


def _layer_norm(width, *, dtype, rngs):
  return layers.LayerNorm(width, epsilon=_LN_EPS, dtype=dtype, rngs=rngs)


@functools.lru_cache(maxsize=None)
def relative_position_index(window):
  """[N, N] index into the (2w-1)^2 bias table (Swin's `relative_position_index`)."""
  rows, cols = np.meshgrid(np.arange(window), np.arange(window), indexing="ij")
  coords = np.stack([rows.ravel(), cols.ravel()])
  rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + (window - 1)
  index = rel[..., 0] * (2 * window - 1) + rel[..., 1]
  index.flags.writeable = False
  return index


class WindowAttention(nnx.Module):
  """Multi-head attention inside windows with a learned relative-position bias."""

  def __init__(self, width, num_heads, window, *, dtype, rngs):
    if width % num_heads:
      raise ValueError(f"width {width} is not divisible by num_heads {num_heads}")
    self.num_heads = num_heads
    self.window = window
    self.qkv = _dense(width, 3 * width, dtype=dtype, rngs=rngs)
    self.proj = _dense(width, width, dtype=dtype, rngs=rngs)
    init = nnx.initializers.truncated_normal(stddev=0.02)
    self.relative_position_bias_table = nnx.Param(
        init(rngs.params(), ((2 * window - 1) ** 2, num_heads)))

  def __call__(self, x, mask=None):
    """x: [B, nW, N, C]; mask: [nW, N, N] or None."""
    b, nw, n, c = x.shape
    head_dim = c // self.num_heads
    qkv = self.qkv(x).reshape(b, nw, n, 3, self.num_heads, head_dim)
    q, k, v = (qkv[..., i, :, :].astype(jnp.float32) for i in range(3))
    logits = jnp.einsum("bwqhd,bwkhd->bwhqk", q * head_dim ** -0.5, k)
    table = self.relative_position_bias_table[...]
    bias = table[relative_position_index(self.window)].transpose(2, 0, 1)  # [heads, N, N]
    logits = logits + bias[None, None]
    if mask is not None:
      logits = logits + jnp.asarray(mask)[None, :, None]
    attn = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum("bwhqk,bwkhd->bwqhd", attn, v).reshape(b, nw, n, c)
    return self.proj(out.astype(x.dtype))


class SwinBlock(nnx.Module):
  """Pre-norm Swin block on a (H, W) token grid, optionally shifted."""

  def __init__(self, width, num_heads, resolution, window, shift, mlp_ratio, drop_path_rate,
               *, dtype, rngs):
    if min(resolution) <= window:  # HTS-AT: one window covers the map, no shift
      window, shift = min(resolution), 0
    self.resolution = tuple(resolution)
    self.window = window
    self.shift = shift
    self.drop_path_rate = drop_path_rate
    self.norm1 = _layer_norm(width, dtype=dtype, rngs=rngs)
    self.attn = WindowAttention(width, num_heads, window, dtype=dtype, rngs=rngs)
    self.norm2 = _layer_norm(width, dtype=dtype, rngs=rngs)
    self.mlp = swin_decoder.Mlp(width, int(width * mlp_ratio), dtype=dtype, rngs=rngs, dense=_dense)

  def attn_mask(self):
    """The shifted-window mask [nW, N, N] (as HTS-AT's `attn_mask` buffer), or None."""
    return swin_decoder.shift_mask(
        self.resolution, (self.window,) * 2, (self.shift,) * 2)

  def __call__(self, x, keys=None):
    b, l, c = x.shape
    h, w = self.resolution
    y = self.norm1(x).reshape(b, h, w, c)
    if self.shift:
      y = jnp.roll(y, (-self.shift, -self.shift), axis=(1, 2))
    windows = swin_decoder.window_partition(y, (self.window,) * 2)
    windows = windows.reshape(b, -1, self.window * self.window, c)
    windows = self.attn(windows, self.attn_mask())
    y = swin_decoder.window_reverse(
        windows.reshape(-1, self.window, self.window, c), (self.window,) * 2, (h, w))
    if self.shift:
      y = jnp.roll(y, (self.shift, self.shift), axis=(1, 2))
    k = (None, None) if keys is None else (opera_ce.fold_in(keys, 0), opera_ce.fold_in(keys, 1))
    x = x + opera_ce.drop_path(y.reshape(b, l, c), self.drop_path_rate, k[0])
    return x + opera_ce.drop_path(self.mlp(self.norm2(x)), self.drop_path_rate, k[1])


class PatchMerging(nnx.Module):
  """2x2 neighbourhoods -> LayerNorm(4C) -> Linear(4C, 2C), Swin's order."""

  def __init__(self, width, resolution, *, dtype, rngs):
    self.resolution = tuple(resolution)
    self.norm = _layer_norm(4 * width, dtype=dtype, rngs=rngs)
    self.reduction = _dense(4 * width, 2 * width, use_bias=False, dtype=dtype, rngs=rngs)

  def __call__(self, x):
    b, _, c = x.shape
    h, w = self.resolution
    x = x.reshape(b, h, w, c)
    x = jnp.concatenate(
        [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], axis=-1)
    return self.reduction(self.norm(x.reshape(b, -1, 4 * c)))


class Stage(nnx.Module):
  """`depth` Swin blocks (odd ones shifted by window // 2), then patch merging."""

  def __init__(self, width, resolution, depth, num_heads, window, mlp_ratio, drop_path_rates,
               downsample, *, dtype, rngs):
    self.blocks = nnx.List([
        SwinBlock(width, num_heads, resolution, window, 0 if i % 2 == 0 else window // 2,
                  mlp_ratio, drop_path_rates[i], dtype=dtype, rngs=rngs)
        for i in range(depth)])
    self.downsample = (
        PatchMerging(width, resolution, dtype=dtype, rngs=rngs) if downsample else None)

  def __call__(self, x, keys=None):
    for i, block in enumerate(self.blocks):
      x = block(x, None if keys is None else opera_ce.fold_in(keys, i))
    return x if self.downsample is None else self.downsample(x)


# ----------------------------------------------------------------------------
# The model.


class OperaCT(nnx.Module):
  """OPERA-CT encoder: [B, T <= spec_size * freq_ratio, mel_bins] -> [B, 8 * embed_dim]."""

  def __init__(self, *, mel_bins=64, spec_size=256, patch_size=4, embed_dim=96,
               depths=(2, 2, 6, 2), num_heads=(4, 8, 16, 32), window_size=8, mlp_ratio=4.0,
               drop_path_rate=0.1, bn_momentum=0.9, cola_dim=512, cola_dropout=0.1,
               crop_frames=128, augment=True, dtype=jnp.float32, rngs):
    if spec_size % mel_bins or spec_size % patch_size:
      raise ValueError(f"spec_size {spec_size} must be a multiple of mel_bins and patch_size")
    if len(depths) != len(num_heads):
      raise ValueError(f"depths {depths} and num_heads {num_heads} differ in length")
    self.mel_bins = mel_bins
    self.spec_size = spec_size
    self.freq_ratio = spec_size // mel_bins
    self.target_frames = spec_size * self.freq_ratio
    self.patch_size = patch_size
    self.feature_dim = int(embed_dim * 2 ** (len(depths) - 1))
    self.crop_frames = crop_frames
    self.augment = augment
    self.dtype = dtype

    self.bn0 = layers.BatchNorm(
        mel_bins, momentum=bn_momentum, epsilon=1e-5, use_fast_variance=False, rngs=rngs)
    self.patch_embed = nnx.Conv(
        1, embed_dim, (patch_size, patch_size), strides=(patch_size, patch_size),
        padding="VALID", dtype=dtype, rngs=rngs)
    self.patch_norm = _layer_norm(embed_dim, dtype=dtype, rngs=rngs)
    grid = spec_size // patch_size
    rates = np.linspace(0.0, drop_path_rate, sum(depths)).tolist()
    stages = []
    for i, (depth, heads) in enumerate(zip(depths, num_heads)):
      first = sum(depths[:i])
      stages.append(Stage(
          embed_dim * 2 ** i, (grid // 2 ** i,) * 2, depth, heads, window_size, mlp_ratio,
          rates[first:first + depth], downsample=i < len(depths) - 1, dtype=dtype, rngs=rngs))
    self.layers = nnx.List(stages)
    self.norm = _layer_norm(self.feature_dim, dtype=dtype, rngs=rngs)
    self.cola_head = opera_ce.ColaHead(self.feature_dim, cola_dim, cola_dropout, rngs=rngs)

  def to_image(self, spec, *, train):
    """bn0, bicubic resize to `target_frames`, reshape -> [B, S, S, 1] (NHWC)."""
    if spec.ndim != 3 or spec.shape[2] != self.mel_bins or not 0 < spec.shape[1] <= self.target_frames:
      raise ValueError(
          f"expected log-mels [B, T <= {self.target_frames}, {self.mel_bins}], got shape {spec.shape}")
    x = self.bn0(jnp.asarray(spec, jnp.float32), use_running_average=not train)
    if x.shape[1] < self.target_frames:
      matrix = jnp.asarray(bicubic_matrix(x.shape[1], self.target_frames))
      x = jnp.einsum("ot,btf->bof", matrix, x, precision=jax.lax.Precision.HIGHEST)
    return wav2img(x, self.spec_size, self.freq_ratio)[..., None].astype(self.dtype)

  def tokens(self, spec, *, train=False, rng=None):
    """Final normed tokens [B, (S / 4 / 2^(stages-1))^2, feature_dim]."""
    x = self.patch_embed(self.to_image(spec, train=train))
    b, h, w, c = x.shape
    x = self.patch_norm(x.reshape(b, h * w, c))
    keys = None if rng is None else opera_ce.example_keys(rng, b)
    for i, stage in enumerate(self.layers):
      x = stage(x, None if keys is None else opera_ce.fold_in(keys, i))
    return self.norm(x)

  def features(self, spec, *, train=False, rng=None):
    """HTS-AT's `latent_output`: the mean of the final tokens -> [B, feature_dim] float32.

    `train=True` uses (and updates) bn0's batch statistics; drop-path needs `rng`
    (a key, or one per example).
    """
    return jnp.mean(self.tokens(spec, train=train, rng=rng).astype(jnp.float32), axis=1)

  def ssl_features(self, spec, rng):
    """Training-mode features of one COLA view (batch statistics, drop-path)."""
    return self.features(spec, train=True, rng=rng)

  def ssl_forward(self, spec, rng):
    """OPERA's COLA objective on two random crops; see `opera_ce.cola_forward`."""
    return opera_ce.cola_forward(
        self, spec, rng, crop_frames=self.crop_frames, augment=self.augment)


def opera_ct(*, rngs=None, dtype=jnp.float32, **overrides):
  """OPERA-CT at full size; keyword args override `CONFIG` (`TINY_CONFIG` for tests)."""
  unknown = set(overrides) - set(CONFIG)
  if unknown:
    raise TypeError(f"unknown OPERA-CT options {sorted(unknown)}; valid: {sorted(CONFIG)}")
  return OperaCT(**{**CONFIG, **overrides}, dtype=dtype, rngs=nnx.Rngs(0) if rngs is None else rngs)


def from_config(model_config, *, rngs):
  """Builds from a model config (ConfigDict or dict) with `CONFIG`'s keys and `dtype`."""
  kwargs = models.config_kwargs(CONFIG, model_config)
  return OperaCT(**kwargs, dtype=models.parse_dtype(model_config.get("dtype", "float32")), rngs=rngs)
