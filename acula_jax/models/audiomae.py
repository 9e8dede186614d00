"""AudioMAE (ViT-B/16 on 1024 x 128 fbanks) as an `opera_gt.MAEViT`, in Flax NNX.

AudioMAE (Huang et al., 2022) is an MAE ViT-B/16: Kaldi fbanks of 1024 frames
x 128 mel bins (10 s at 10 ms hop, normalised as (x + 4.27) / (2 * 4.57)) cut
into 16 x 16 patches, a (64, 8) grid of 512 tokens ordered row-major over
(time, freq); 12 pre-LN blocks of width 768 with 12 heads, a cls token and
fixed sin-cos positions. Pre-training masks 80% of the patches with
normalised-pixel targets and decodes with 16 Swin blocks (width 512, 16 heads,
4 x 4 windows on the (64, 8) grid); `decoder="transformer"` gives a plain,
configurable decoder instead.

It is `opera_gt.MAEViT` with AudioMAE's settings (`CONFIG`), which a converted
checkpoint needs:

* Positions. AudioMAE (and OPERA-GT) build the table with
  `get_2d_sincos_pos_embed_flexible(dim, patch_embed.patch_hw)`, where
  `patch_hw = (freq patches, time patches)` -- the reverse of the token grid
  (`pos_layout="patch_hw"`); the converter checks it against the checkpoint's
  stored `pos_embed`.
* Features. OPERA's AudioMAE baseline (`vit_base_patch16(global_pool=True)
  .forward_feature`) zero-pads every input to 1024 x 128, runs the encoder and
  returns fc_norm(mean of patch tokens): `pad_to_full=True`. The pre-training
  checkpoint has no `fc_norm` (the baseline loads it with strict=False), so the
  converter leaves it at identity unless the checkpoint has one.
* Swin decoder on the patch grid itself (`swin_feat_size="grid"`).
"""

from flax import nnx
import jax.numpy as jnp

from acula_jax import models
from acula_jax.models import opera_gt

FRONTEND = "audiomae_fbank"  # the front end it reads (`audio.FRONTENDS`)
CONFIG = dict(
    opera_gt.CONFIG, spec_shape=(1024, 128), patch_size=(16, 16), width=768, depth=12, num_heads=12,
    mlp_ratio=4.0, decoder="transformer", decoder_width=512, decoder_depth=8, decoder_heads=16,
    mask_ratio=0.8, norm_pix_loss=True, pos_layout="patch_hw", swin_feat_size="grid", pad_to_full=True)

# The released pre-training setting (decoder_mode=1).
PRETRAINED_CONFIG = dict(CONFIG, decoder="swin", decoder_depth=16)

TINY_CONFIG = dict(
    spec_shape=(64, 32), patch_size=(8, 8), width=32, depth=2, num_heads=2,
    decoder_width=32, decoder_depth=2, decoder_heads=2)


def audiomae(*, rngs=None, dtype=jnp.float32, **overrides):
  """AudioMAE ViT-B/16; keyword args override `CONFIG` (`TINY_CONFIG` for tests)."""
  unknown = set(overrides) - set(CONFIG)
  if unknown:
    raise TypeError(f"unknown AudioMAE options {sorted(unknown)}; valid: {sorted(CONFIG)}")
  return opera_gt.MAEViT(**{**CONFIG, **overrides}, dtype=dtype,
                         rngs=nnx.Rngs(0) if rngs is None else rngs)


def from_config(model_config, *, rngs):
  """Builds from a model config (ConfigDict or dict) with `CONFIG`'s keys and `dtype`."""
  return opera_gt.MAEViT(**models.config_kwargs(CONFIG, model_config),
                         dtype=models.parse_dtype(model_config.get("dtype", "float32")), rngs=rngs)
