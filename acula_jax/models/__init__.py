"""Audio encoders by name, as big_vision's models: `get_model(name)` imports `acula_jax.models.<name>`.

Each encoder module owns its `CONFIG` (every option's default, in one place; configs and converters
start from it), `TINY_CONFIG` (the test size) and `from_config(model_config, *, rngs)`.
"""
import importlib

import jax.numpy as jnp

ENCODERS = ("opera_gt", "opera_ce", "opera_ct", "audiomae")


def get_model(name: str):
  """The module of encoder `name` (one of `ENCODERS`)."""
  if name not in ENCODERS:
    raise ValueError(f"unknown encoder {name!r}; available: {', '.join(ENCODERS)}")
  return importlib.import_module(f"acula_jax.models.{name}")


def config_kwargs(defaults: dict, model_config) -> dict:
  """Constructor kwargs from a config mapping (dict or ConfigDict): `defaults`' keys only, each from
  the config where it has one, lists as tuples."""
  def as_tuple(v):
    return tuple(as_tuple(x) for x in v) if isinstance(v, (list, tuple)) else v
  return {k: as_tuple(model_config.get(k, v)) for k, v in defaults.items()}


def parse_dtype(name):
  """'float32' / 'bfloat16' (or a dtype) -> jnp dtype."""
  return jnp.dtype(name).type if isinstance(name, str) else name
