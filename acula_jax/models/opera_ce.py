"""OPERA-CE: a COLA-trained EfficientNet-B0 on log-mel spectrograms, in Flax NNX.

OPERA-CE (Zhang et al., OPERA, 2024) wraps `efficientnet_pytorch`'s
EfficientNet-B0 (`EfficientNet.from_name("efficientnet-b0",
include_top=False)`) behind a 3x3 conv that turns the 1-channel [B, 1, T, 64]
log-mel into 3 channels (no padding, so T x 64 -> (T-2) x 62). The trunk:

  stem:   3x3/2 conv (32) + BatchNorm + swish
  blocks: 16 MBConv blocks (expand 1x1 + BN + swish, depthwise kxk + BN + swish,
          squeeze-excite from the block's input width / 4, project 1x1 + BN,
          residual with drop-connect when stride 1 and widths match)
  head:   1x1 conv (1280) + BN + swish, global average pool -> 1280-d.

Exactness notes (what a converted checkpoint needs to reproduce):
* Padding: `efficientnet_pytorch` builds every conv with TensorFlow "SAME"
  padding computed once for a 224 x 224 image (`Conv2dStaticSamePadding`),
  whatever the real input size. So a 3x3/2 conv pads (0, 1), a 5x5/2 conv
  (1, 2) and stride-1 convs symmetrically. `same_padding_size=224` (the
  default) reproduces this; `same_padding_size=None` gives timm's symmetric
  k // 2 padding (timm `efficientnet_b0`).
* BatchNorm: eps 1e-3 and torch momentum 0.01 (flax momentum 0.99) for
  `efficientnet_pytorch`; timm uses eps 1e-5 and flax momentum 0.9. Running
  statistics are `nnx.BatchStat`s: `train=True` normalises with batch
  statistics and updates them, `train=False` uses them. (Flax updates the
  running variance with the biased batch variance, torch with the unbiased
  one: a factor n / (n - 1) with n = B * H * W, negligible at these sizes.)
* Drop-connect (stochastic depth) rate grows linearly with the block index,
  `rate * i / num_blocks`, and only applies when an `rng` is passed.

The self-supervised objective is OPERA's COLA: two random crops of the same
clip, each encoded and projected by `ColaHead`; the similarity of crop i and
crop j is the bilinear form W f(x_i) . f(x_j), and the loss is the
cross-entropy of each row of the B x B similarity matrix against its diagonal.
"""

import math

from flax import nnx
import jax
import jax.numpy as jnp

from acula_jax import models
from acula_jax.models import cpu_kernels
from acula_jax.models import layers
from acula_jax.models import partitioning

# (repeats, kernel, stride, expand ratio, in width, out width) per stage of
# EfficientNet-B0 (width and depth multipliers 1.0).
B0_BLOCKS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)

FRONTEND = "log_mel"  # the front end it reads (`audio.FRONTENDS`)
CONFIG = dict(
    mel_bins=64, blocks=B0_BLOCKS, stem_width=32, head_width=1280, se_ratio=0.25,
    same_padding_size=224, bn_eps=1e-3, bn_momentum=0.99, drop_connect_rate=0.1,
    cola_dim=512, cola_dropout=0.1, crop_frames=128, augment=True)

# Seconds to compile; covers expand 1 and 6, k 3 and 5, strides 1 and 2 and a residual.
TINY_CONFIG = dict(
    blocks=((1, 3, 1, 1, 8, 8), (2, 5, 2, 4, 8, 16)), stem_width=8, head_width=32,
    cola_dim=16, crop_frames=16)


# ----------------------------------------------------------------------------
# Shared with OPERA-CT: stochastic depth, COLA crops, head and loss.


def example_keys(rng, batch):
  """One key per example: `rng` itself if it already is a [batch] key array, else split from it.

  The AcuLa step passes per-example keys so that an example's randomness does
  not depend on how the batch is cut into micro-batches (as MAE masking).
  """
  if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key) and rng.shape == (batch,):
    return rng
  return jax.random.split(rng, batch)


def fold_in(keys, data):
  """`jax.random.fold_in` for each of a [B] key array."""
  return jax.vmap(lambda k: jax.random.fold_in(k, data))(keys)


def drop_path(x, rate, keys):
  """Per-example stochastic depth: x / (1 - rate) or 0; identity when `keys` is None.

  keys: one key per example ([B]).
  """
  if keys is None or rate <= 0.0:
    return x
  keep = jax.vmap(lambda k: jax.random.bernoulli(k, 1.0 - rate))(keys)
  keep = keep.reshape((x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


def dropout(x, rate, keys):
  """Inverted dropout with one key per example ([B]); identity when `keys` is None."""
  if keys is None or rate <= 0.0:
    return x
  keep = jax.vmap(lambda k: jax.random.bernoulli(k, 1.0 - rate, x.shape[1:]))(keys)
  return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


def random_crops(spec, crop_frames, keys):
  """One random `crop_frames` window per example (the whole clip if shorter).

  As OPERA's `random_crop`: start = floor(u * (T - crop)), u ~ U[0, 1).
  keys: one key per example ([B]).
  """
  _, t, _ = spec.shape
  if crop_frames >= t:
    return spec
  u = jax.vmap(jax.random.uniform)(keys)
  starts = jnp.floor(u * (t - crop_frames)).astype(jnp.int32)
  crop = lambda x, s: jax.lax.dynamic_slice_in_dim(x, s, crop_frames, axis=0)
  return jax.vmap(crop)(spec, starts)


def random_multiply(spec, keys):
  """OPERA's `random_multiply`: scales each example by U[0.9, 1.1) (one key per example)."""
  scale = 0.9 + jax.vmap(jax.random.uniform)(keys) / 5.0
  return spec * scale[:, None, None]


class ColaHead(nnx.Module):
  """OPERA's COLA projection: dropout -> g -> dropout -> tanh(LN) -> dropout.

  Key names follow `models_cola.Cola` (`g`, `layer_norm`, `linear`); the
  bilinear `linear` (no bias) is applied to the first view only.
  """

  def __init__(self, in_dim, dim=512, dropout_rate=0.1, *, rngs):
    self.dropout_rate = dropout_rate
    self.g = nnx.Linear(in_dim, dim, rngs=rngs)
    self.layer_norm = layers.LayerNorm(dim, epsilon=1e-5, rngs=rngs)
    self.linear = nnx.Linear(dim, dim, use_bias=False, rngs=rngs)

  def __call__(self, features, keys=None):
    """keys: one key per example ([B]) for dropout, or None (deterministic)."""
    k = [None] * 3 if keys is None else [fold_in(keys, i) for i in range(3)]
    x = dropout(features, self.dropout_rate, k[0])
    x = dropout(self.g(x), self.dropout_rate, k[1])
    return dropout(jnp.tanh(self.layer_norm(x)), self.dropout_rate, k[2])


def cola_loss(z1, z2):
  """Cross-entropy of the B x B similarities z1 z2^T against the diagonal."""
  logits = (z1 @ z2.T).astype(jnp.float32)
  labels = jnp.arange(z1.shape[0])
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  loss = -jnp.mean(log_probs[labels, labels])
  accuracy = jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))
  return loss, accuracy


def cola_forward(encoder, spec, rng, *, crop_frames, augment):
  """COLA's objective for any encoder with `ssl_features(spec, keys)` and `cola_head`.

  rng: a key, or one key per example ([B]); each example's crops, scaling,
  drop-path and dropout come from its own key.

  Returns (loss, aux) with aux = {visible_features (features of the first
  crop, [B, D]), accuracy (of picking the matching crop)}.
  """
  keys = example_keys(rng, spec.shape[0])
  k = [fold_in(keys, i) for i in range(8)]
  x1, x2 = random_crops(spec, crop_frames, k[0]), random_crops(spec, crop_frames, k[1])
  if augment:
    x1, x2 = random_multiply(x1, k[2]), random_multiply(x2, k[3])
  # Two passes, as the reference: BatchNorm sees each view's own statistics.
  f1, f2 = encoder.ssl_features(x1, k[4]), encoder.ssl_features(x2, k[5])
  z1 = encoder.cola_head.linear(encoder.cola_head(f1, k[6]))
  z2 = encoder.cola_head(f2, k[7])
  # Over the whole batch's crops when the step runs per device, as on one device.
  loss, accuracy = cola_loss(partitioning.gather_batch(z1), partitioning.gather_batch(z2))
  return loss, dict(visible_features=f1, accuracy=accuracy)


# ----------------------------------------------------------------------------
# EfficientNet pieces (NHWC; time is H, mel is W).


def same_padding(size, kernel, stride):
  """TensorFlow SAME padding (before, after) for a `size`-long input."""
  out = -(-size // stride)
  pad = max((out - 1) * stride + kernel - size, 0)
  return (pad // 2, pad - pad // 2)


def _padding(kernel, stride, image_size):
  if image_size is None:  # timm: symmetric
    p = ((stride - 1) + (kernel - 1)) // 2
    return ((p, p), (p, p))
  pad = same_padding(image_size, kernel, stride)
  return (pad, pad)


def _conv(in_ch, out_ch, kernel, stride=1, *, padding=((0, 0), (0, 0)), use_bias=False, dtype, rngs):
  return nnx.Conv(
      in_ch, out_ch, (kernel, kernel), strides=(stride, stride), padding=padding,
      use_bias=use_bias, dtype=dtype, rngs=rngs)


class DepthwiseConv(nnx.Conv):
  """A bias-free k x k convolution with one filter per channel over NHWC inputs (nnx.Conv's variables).

  nnx.Conv's (XLA's: cuDNN / TPU kernels), except in programs compiled for CPU, which get
  `cpu_kernels.shifted_depthwise_conv` (`jax.lax.platform_dependent`, not the host's backend).
  """

  def __init__(self, channels, kernel, stride, *, padding, dtype, rngs):
    super().__init__(
        channels, channels, (kernel, kernel), strides=(stride, stride), padding=padding,
        feature_group_count=channels, use_bias=False, dtype=dtype, rngs=rngs)

  def __call__(self, x):
    channels = self.kernel.shape[-1]
    if x.shape[-1] != channels:
      raise ValueError(f"depthwise convolution of {channels} channels got input of shape {x.shape}")
    return jax.lax.platform_dependent(x, cpu=self.shifted_sum, default=super().__call__)

  def shifted_sum(self, x):
    kernel = self.kernel[...]
    dtype = self.dtype or jnp.promote_types(x.dtype, kernel.dtype)
    return cpu_kernels.shifted_depthwise_conv(x.astype(dtype), kernel.astype(dtype), self.strides,
                                              self.padding)


class MBConv(nnx.Module):
  """Mobile inverted bottleneck with squeeze-excite (efficientnet_pytorch layout)."""

  def __init__(self, in_ch, out_ch, kernel, stride, expand, *, image_size, se_ratio, bn,
               drop_rate, dtype, rngs):
    mid = in_ch * expand
    if expand != 1:
      self.expand_conv = _conv(in_ch, mid, 1, dtype=dtype, rngs=rngs)
      self.bn0 = bn(mid)
    else:
      self.expand_conv = self.bn0 = None
    self.depthwise_conv = DepthwiseConv(
        mid, kernel, stride, padding=_padding(kernel, stride, image_size), dtype=dtype, rngs=rngs)
    self.bn1 = bn(mid)
    squeezed = max(1, int(in_ch * se_ratio))
    self.se_reduce = _conv(mid, squeezed, 1, use_bias=True, dtype=dtype, rngs=rngs)
    self.se_expand = _conv(squeezed, mid, 1, use_bias=True, dtype=dtype, rngs=rngs)
    self.project_conv = _conv(mid, out_ch, 1, dtype=dtype, rngs=rngs)
    self.bn2 = bn(out_ch)
    self.residual = stride == 1 and in_ch == out_ch
    self.drop_rate = drop_rate

  def __call__(self, x, *, train, keys=None):
    y = x
    if self.expand_conv is not None:
      y = jax.nn.silu(self.bn0(self.expand_conv(y), use_running_average=not train))
    y = jax.nn.silu(self.bn1(self.depthwise_conv(y), use_running_average=not train))
    squeezed = jnp.mean(y.astype(jnp.float32), axis=(1, 2), keepdims=True).astype(y.dtype)
    gate = self.se_expand(jax.nn.silu(self.se_reduce(squeezed)))
    y = jax.nn.sigmoid(gate) * y
    y = self.bn2(self.project_conv(y), use_running_average=not train)
    if self.residual:
      y = drop_path(y, self.drop_rate, keys) + x
    return y


class OperaCE(nnx.Module):
  """OPERA-CE encoder: [B, T, mel_bins] log-mel -> [B, head_width] features."""

  def __init__(self, *, mel_bins=64, blocks=B0_BLOCKS, stem_width=32, head_width=1280,
               se_ratio=0.25, same_padding_size=224, bn_eps=1e-3, bn_momentum=0.99,
               drop_connect_rate=0.1, cola_dim=512, cola_dropout=0.1, crop_frames=128,
               augment=True, dtype=jnp.float32, rngs):
    self.mel_bins = mel_bins
    self.feature_dim = head_width
    self.crop_frames = crop_frames
    self.augment = augment
    self.dtype = dtype
    bn = lambda n: layers.BatchNorm(
        n, momentum=bn_momentum, epsilon=bn_eps, use_fast_variance=False, dtype=dtype, rngs=rngs)

    self.cnn1 = _conv(1, 3, 3, use_bias=True, dtype=dtype, rngs=rngs)  # OPERA's 1 -> 3 channels
    self.conv_stem = _conv(
        3, stem_width, 3, 2, padding=_padding(3, 2, same_padding_size), dtype=dtype, rngs=rngs)
    self.bn0 = bn(stem_width)
    size = None if same_padding_size is None else math.ceil(same_padding_size / 2)
    num_blocks = sum(b[0] for b in blocks)
    mbconvs = []
    for repeats, kernel, stride, expand, in_ch, out_ch in blocks:
      for r in range(repeats):
        mbconvs.append(MBConv(
            in_ch if r == 0 else out_ch, out_ch, kernel, stride if r == 0 else 1, expand,
            image_size=size, se_ratio=se_ratio, bn=bn,
            drop_rate=drop_connect_rate * len(mbconvs) / num_blocks, dtype=dtype, rngs=rngs))
        if r == 0 and size is not None:
          size = math.ceil(size / stride)  # the static padding of later blocks follows
    self.blocks = nnx.List(mbconvs)
    self.conv_head = _conv(blocks[-1][5], head_width, 1, dtype=dtype, rngs=rngs)
    self.bn1 = bn(head_width)
    self.cola_head = ColaHead(head_width, cola_dim, cola_dropout, rngs=rngs)

  def _check(self, spec):
    if spec.ndim != 3 or spec.shape[2] != self.mel_bins or spec.shape[1] < 3:
      raise ValueError(
          f"expected log-mels [B, T >= 3, {self.mel_bins}], got shape {spec.shape}")

  def trunk(self, spec, *, train, rng=None):
    """[B, T, F] -> [B, T', F', head_width] activations after the head BN + swish."""
    self._check(spec)
    keys = None if rng is None else example_keys(rng, spec.shape[0])
    x = self.cnn1(spec.astype(self.dtype)[..., None])
    x = jax.nn.silu(self.bn0(self.conv_stem(x), use_running_average=not train))
    for i, block in enumerate(self.blocks):
      x = block(x, train=train, keys=None if keys is None else fold_in(keys, i))
    return jax.nn.silu(self.bn1(self.conv_head(x), use_running_average=not train))

  def features(self, spec, *, train=False, rng=None):
    """Global average pool of the trunk -> [B, head_width] float32.

    `train=True` uses (and updates) batch statistics; drop-connect needs `rng`
    (a key, or one per example).
    """
    return jnp.mean(self.trunk(spec, train=train, rng=rng).astype(jnp.float32), axis=(1, 2))

  def ssl_features(self, spec, rng):
    """Training-mode features of one COLA view (batch statistics, drop-path)."""
    return self.features(spec, train=True, rng=rng)

  def ssl_forward(self, spec, rng):
    """OPERA's COLA objective on two random crops; see `cola_forward`."""
    return cola_forward(self, spec, rng, crop_frames=self.crop_frames, augment=self.augment)


def opera_ce(*, rngs=None, dtype=jnp.float32, **overrides):
  """OPERA-CE at full size; keyword args override `CONFIG` (`TINY_CONFIG` for tests)."""
  unknown = set(overrides) - set(CONFIG)
  if unknown:
    raise TypeError(f"unknown OPERA-CE options {sorted(unknown)}; valid: {sorted(CONFIG)}")
  return OperaCE(**{**CONFIG, **overrides}, dtype=dtype, rngs=nnx.Rngs(0) if rngs is None else rngs)


def from_config(model_config, *, rngs):
  """Builds from a model config (ConfigDict or dict) with `CONFIG`'s keys and `dtype`."""
  kwargs = models.config_kwargs(CONFIG, model_config)
  return OperaCE(**kwargs, dtype=models.parse_dtype(model_config.get("dtype", "float32")), rngs=rngs)

