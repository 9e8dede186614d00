"""AudioMAE (ViT-B/16 on 1024 x 128 fbanks) as an `opera_gt.MAEViT`, in Flax NNX.

AudioMAE (Huang et al., 2022) is an MAE ViT-B/16: Kaldi fbanks of 1024 frames
x 128 mel bins (10 s at 10 ms hop, normalised as (x + 4.27) / (2 * 4.57)) cut
into 16 x 16 patches, a (64, 8) grid of 512 tokens ordered row-major over
(time, freq); 12 pre-LN blocks of width 768 with 12 heads, a cls token and
fixed sin-cos positions. Pre-training masks 80% of the patches with
normalised-pixel targets and decodes with 16 Swin blocks (width 512, 16 heads,
4 x 4 windows on the (64, 8) grid); `decoder="transformer"` gives a plain,
configurable decoder instead.

Differences from `MAEViT` that a converted checkpoint needs:

* Positions. AudioMAE (and OPERA-GT) build the table with
  `get_2d_sincos_pos_embed_flexible(dim, patch_embed.patch_hw)`, where
  `patch_hw = (freq patches, time patches)` -- the reverse of the token grid.
  So token k gets sin-cos(k % rows) in its first half and sin-cos(k // rows)
  in its second half, not (freq column, time row). `patch_hw_pos_embed`
  reproduces that table; the converter checks it against the checkpoint's
  stored `pos_embed`.
* Features. OPERA's AudioMAE baseline (`vit_base_patch16(global_pool=True)
  .forward_feature`) zero-pads every input to 1024 x 128, runs the encoder and
  returns fc_norm(mean of patch tokens). `features` pads the same way when
  `pad_to_full` (default). The pre-training checkpoint has no `fc_norm`
  (the baseline loads it with strict=False), so the converter leaves it at
  identity unless the checkpoint has one.
"""

import functools

from flax import nnx
import jax.numpy as jnp
import numpy as np

from acula_jax import models
from acula_jax.models import opera_gt
from acula_jax.models import swin_decoder

DECODERS = ("transformer", "swin")

CONFIG = dict(
    spec_shape=(1024, 128), patch_size=(16, 16), width=768, depth=12, num_heads=12,
    mlp_ratio=4.0, decoder="transformer", decoder_width=512, decoder_depth=8,
    decoder_heads=16, mask_ratio=0.8, norm_pix_loss=True, pad_to_full=True, remat="none")

# The released pre-training setting (decoder_mode=1).
PRETRAINED_CONFIG = dict(CONFIG, decoder="swin", decoder_depth=16)

TINY_CONFIG = dict(
    spec_shape=(64, 32), patch_size=(8, 8), width=32, depth=2, num_heads=2,
    decoder_width=32, decoder_depth=2, decoder_heads=2)


@functools.lru_cache(maxsize=None)
def _patch_hw_table(dim, rows, cols, cls_token):
  k = np.arange(rows * cols)
  emb = np.concatenate(
      [opera_gt.sincos_1d(dim // 2, k % rows), opera_gt.sincos_1d(dim // 2, k // rows)], axis=1)
  if cls_token:
    emb = np.concatenate([np.zeros((1, dim)), emb], axis=0)
  emb = emb.astype(np.float32)
  emb.flags.writeable = False
  return emb


def patch_hw_pos_embed(dim, grid_size, cls_token=False):
  """MAE's `get_2d_sincos_pos_embed_flexible(dim, (cols, rows))` for a (rows, cols) grid.

  Row-major over a (cols, rows) grid: the first half of the channels encodes
  k % rows and the second half k // rows, for token k of the (rows, cols)
  patch grid.
  """
  if dim % 4:
    raise ValueError(f"2-D sin-cos embedding width must be a multiple of 4, got {dim}")
  rows, cols = grid_size
  return _patch_hw_table(int(dim), int(rows), int(cols), bool(cls_token))


class AudioMAE(opera_gt.MAEViT):
  """MAEViT with AudioMAE's positions, input padding and optional Swin decoder."""

  def __init__(self, *, decoder="transformer", swin_feat_size=None, pad_to_full=True,
               decoder_width=512, decoder_depth=8, decoder_heads=16, mlp_ratio=4.0,
               dtype=jnp.float32, rngs, **kwargs):
    if decoder not in DECODERS:
      raise ValueError(f"unknown decoder {decoder!r}; available: {', '.join(DECODERS)}")
    swin = decoder == "swin"
    super().__init__(
        decoder="transformer", decoder_width=decoder_width,
        decoder_depth=0 if swin else decoder_depth, decoder_heads=decoder_heads,
        mlp_ratio=mlp_ratio, dtype=dtype, rngs=rngs, **kwargs)
    self.decoder = decoder
    self.pad_to_full = pad_to_full
    self.feature_dim = self.width
    if swin:
      self.decoder_blocks = swin_decoder.swin_decoder_blocks(
          decoder_width, decoder_depth, decoder_heads, mlp_ratio,
          feat_size=tuple(swin_feat_size or self.grid_size), dtype=dtype, rngs=rngs)

  def pos_embed(self, rows=None, *, decoder=False):
    """AudioMAE's fixed positions [1 + rows * cols, width] (row 0: cls)."""
    rows = self.grid_size[0] if rows is None else rows
    dim = self.decoder_width if decoder else self.width
    table = patch_hw_pos_embed(dim, self.grid_size, cls_token=True)
    return jnp.asarray(table[:1 + rows * self.grid_size[1]])

  def features(self, spec, *, train=False):
    """fc_norm(mean of patch tokens) [B, width], after zero-padding to full length."""
    if self.pad_to_full and spec.ndim == 3 and spec.shape[1] < self.spec_shape[0]:
      spec = jnp.pad(spec, ((0, 0), (0, self.spec_shape[0] - spec.shape[1]), (0, 0)))
    return super().features(spec, train=train)


def audiomae(*, rngs=None, dtype=jnp.float32, **overrides):
  """AudioMAE ViT-B/16; keyword args override `CONFIG` (`TINY_CONFIG` for tests)."""
  unknown = set(overrides) - set(CONFIG) - {"swin_feat_size"}
  if unknown:
    raise TypeError(f"unknown AudioMAE options {sorted(unknown)}; valid: {sorted(CONFIG)}")
  return AudioMAE(**{**CONFIG, **overrides}, dtype=dtype, rngs=nnx.Rngs(0) if rngs is None else rngs)


def from_config(model_config, *, rngs):
  """Builds from a model config (ConfigDict or dict) with `CONFIG`'s keys and `dtype`."""
  kwargs = models.config_kwargs(dict(CONFIG, swin_feat_size=None), model_config)
  return AudioMAE(**kwargs, dtype=models.parse_dtype(model_config.get("dtype", "float32")), rngs=rngs)
