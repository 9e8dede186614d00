"""Orbax checkpoints of the training state and data iterator, and the exported encoder.

Layout of a workdir:
  checkpoints/<step>/{state,data}   model + optimizer state and the Grain iterator position (atomic:
                                    Orbax writes to a temporary directory and renames it when complete)
  export/encoder/                   the encoder parameters alone, for `load_encoder`
  export/manifest.json              the model config needed to rebuild the encoder
"""
import json
import os
import pathlib

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from flax import nnx

from acula_jax import errors

EXPORT_DIR = "export"
# What an export holds: parameters and BatchNorm running statistics (OPERA-CE/CT); the ViTs have
# no BatchStats, so their exports are unchanged.
EXPORT_VARIABLES = (nnx.Param, nnx.BatchStat)


def make_manager(workdir, *, save_interval_steps: int, max_to_keep: int | None,
                 read_only: bool = False) -> ocp.CheckpointManager:
  """Async saves every `save_interval_steps`, keeping the last `max_to_keep` (None = all)."""
  options = ocp.CheckpointManagerOptions(
      save_interval_steps=save_interval_steps, max_to_keep=max_to_keep, create=not read_only,
      read_only=read_only, enable_async_checkpointing=True)
  return ocp.CheckpointManager(
      pathlib.Path(workdir, "checkpoints").absolute(), options=options)


def save(manager, step: int, state: nnx.State, data_iterator, *, force=False) -> bool:
  """Saves (asynchronously) when the interval says so or `force`; returns whether it saved."""
  return manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state.to_pure_dict()),
      data=grain.checkpoint.CheckpointSave(data_iterator)), force=force)


def restore(manager, step: int, state: nnx.State, data_iterator) -> nnx.State:
  """Restores `step` into a copy of `state` (shapes, dtypes and shardings from it) and the iterator."""
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state.to_pure_dict())
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target),
      data=grain.checkpoint.CheckpointRestore(data_iterator)))
  nnx.replace_by_pure_dict(state, restored["state"])
  return state


def export_encoder(workdir, encoder: nnx.Module, model_config) -> pathlib.Path:
  """Writes the encoder alone (no optimizer, no heads) with the config needed to rebuild it."""
  directory = pathlib.Path(workdir, EXPORT_DIR).absolute()
  directory.mkdir(parents=True, exist_ok=True)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(
        directory / "encoder", nnx.state(encoder, EXPORT_VARIABLES).to_pure_dict(), force=True)
  if jax.process_index() == 0:
    manifest = {"model": model_config.to_dict(), "format": "acula_jax.encoder/1"}
    tmp = directory / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, directory / "manifest.json")
  return directory


def _export_dir(path) -> pathlib.Path:
  """Accepts an export directory or a workdir that contains one."""
  path = pathlib.Path(path).absolute()
  for candidate in (path, path / EXPORT_DIR):
    if (candidate / "manifest.json").is_file():
      return candidate
  raise errors.DataError(path, "no exported encoder here (expected manifest.json or export/manifest.json)")


def load_encoder_params(path, encoder: nnx.Module) -> nnx.Module:
  """Loads exported encoder parameters (and BatchNorm statistics) into an encoder of the same shape."""
  directory = _export_dir(path)
  state = nnx.state(encoder, EXPORT_VARIABLES)
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state.to_pure_dict())
  with ocp.StandardCheckpointer() as checkpointer:
    try:
      restored = checkpointer.restore(directory / "encoder", target)
    except ValueError as e:  # Orbax names the mismatching leaf.
      raise errors.DataError(directory, f"encoder does not match the configured model: {e}") from e
  nnx.replace_by_pure_dict(state, restored)
  nnx.update(encoder, state)
  return encoder


def load_encoder(path, *, seed: int = 0) -> nnx.Module:
  """The aligned audio encoder of a workdir or export directory, without optimizer or teacher."""
  from acula_jax.models import acula  # pylint: disable=g-import-not-at-top  (avoids a cycle)
  directory = _export_dir(path)
  manifest = json.loads((directory / "manifest.json").read_text())
  model_config = ml_collections.ConfigDict(manifest["model"])
  encoder = acula.build_encoder(model_config, rngs=nnx.Rngs(seed))
  return load_encoder_params(directory, encoder)
