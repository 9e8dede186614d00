"""The AcuLa model: an audio encoder plus the audio and text projection heads of the alignment loss."""
import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from acula_jax.models import audiomae
from acula_jax.models import heads
from acula_jax.models import opera_ce
from acula_jax.models import opera_ct
from acula_jax.models import opera_gt

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# Encoders other than OPERA-GT build from their own config keys (see each module's CONFIG).
_FROM_CONFIG = {
    "opera_ce": opera_ce.from_config, "opera_ct": opera_ct.from_config,
    "audiomae": audiomae.from_config}
ENCODERS = ("opera_gt",) + tuple(_FROM_CONFIG)
# "auto" settings, by the platform a program is compiled for: bfloat16 compute (parameters and
# optimizer state stay float32) and rematerialised blocks on accelerators, where HBM bounds the batch;
# float32 and no recomputation on CPU, where neither pays.
AUTO = {"dtype": {"cpu": "float32", "default": "bfloat16"},
        "remat": {"cpu": "none", "default": "dots"}}


def resolve_auto(key: str, value, platform: str | None = None):
  """What `value` of model setting `key` stands for in programs for `platform` (default: this
  process's devices, where a program without a mesh runs)."""
  if value != "auto":
    return value
  platform = platform or jax.devices()[0].platform
  choices = AUTO[key]
  return choices.get(platform, choices["default"])


def for_platform(model_config, platform: str | None = None):
  """A copy of `model_config` (ConfigDict or dict) with its "auto" settings made concrete."""
  config = ml_collections.ConfigDict(dict(model_config))
  for key in AUTO:
    if key in config:
      config[key] = resolve_auto(key, config[key], platform)
  return config


def build_encoder(model_config, *, rngs: nnx.Rngs, platform: str | None = None) -> nnx.Module:
  """The encoder named by `model_config.name`, at the configured size, its "auto" settings (`AUTO`)
  resolved for programs on `platform`."""
  model_config = for_platform(model_config, platform)
  if model_config.name in _FROM_CONFIG:
    return _FROM_CONFIG[model_config.name](model_config, rngs=rngs)
  if model_config.name != "opera_gt":
    raise ValueError(f"unknown encoder {model_config.name!r}; available: {', '.join(ENCODERS)}")
  # Exports written before `decoder`/`pos_layout` existed keep their transformer decoder and
  # (time, freq) grid positions.
  return opera_gt.MAEViT(
      spec_shape=(model_config.spec_frames, 64),
      width=model_config.width, depth=model_config.depth, num_heads=model_config.num_heads,
      mlp_ratio=model_config.mlp_ratio, decoder=model_config.get("decoder", "transformer"),
      decoder_width=model_config.decoder_width,
      decoder_depth=model_config.decoder_depth, decoder_heads=model_config.decoder_heads,
      mask_ratio=model_config.mask_ratio, norm_pix_loss=model_config.norm_pix_loss,
      pos_layout=model_config.get("pos_layout", "grid"), remat=model_config.remat,
      dtype=DTYPES[model_config.dtype], rngs=rngs)


class AculaModel(nnx.Module):
  """Encoder + projection heads; the text head exists only when a teacher is configured.

  The text head's input width is the teacher's embedding width, read from the teacher manifest by the
  caller (never hard-coded: MiniLM is 384-d, MedGemma-4B 2560-d).
  """

  def __init__(self, config, text_dim: int | None, *, rngs: nnx.Rngs, platform: str | None = None):
    self.encoder = build_encoder(config.model, rngs=rngs, platform=platform)
    self.text_dim = text_dim
    if text_dim:
      self.audio_head = heads.ProjectionMLP(
          self.encoder.feature_dim, config.heads.hidden_dim, config.heads.out_dim, rngs=rngs)
      self.text_head = heads.ProjectionMLP(
          text_dim, config.heads.hidden_dim, config.heads.out_dim, rngs=rngs)
      # CLIP's parametrisation: logit scale = exp(log_temperature), learnable.
      self.log_temperature = nnx.Param(jnp.asarray(-math.log(config.loss.init_temperature), jnp.float32))
