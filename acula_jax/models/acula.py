"""The AcuLa model: an audio encoder plus the audio and text projection heads of the alignment loss."""
import math

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections

from acula_jax import models
from acula_jax.models import heads

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
  """The encoder named by `model_config.name` (`models.get_model`), at the configured size, its
  "auto" settings (`AUTO`) resolved for programs on `platform`."""
  model_config = for_platform(model_config, platform)
  return models.get_model(model_config.name).from_config(model_config, rngs=rngs)


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
