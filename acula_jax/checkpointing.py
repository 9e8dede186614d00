"""Orbax checkpoints of the training state and data iterator, and the exported encoder.

Layout of a workdir:
  checkpoints/<step>/{state,data}   model + optimizer state and the Grain iterator position (atomic:
                                    Orbax writes to a temporary directory and renames it when complete)
  export/encoder/                   the encoder parameters alone, for `load_encoder`
  export/manifest.json              the model config needed to rebuild the encoder
  export/heads/params/              (aligned runs) Orbax checkpoint {"audio_head", "text_head",
                                    "log_temperature"}: the nnx.Param pure dicts of the two
                                    `models.heads.ProjectionMLP`s and the temperature
  export/heads/manifest.json        {"format": HEADS_FORMAT, "audio_dim", "text_dim", "hidden_dim",
                                    "out_dim", "alignment", "align_features", "teacher": the teacher
                                    manifest's model fields and its `config` (to embed new texts alike)}
"""
import json
import os
import pathlib
import shutil

from flax import nnx
import grain
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from acula_jax import errors
from acula_jax import fileio
from acula_jax.models import acula
from acula_jax.models import heads as heads_lib

EXPORT_DIR = "export"
# /3: every model option is in the manifest and read as written (readers fill in no defaults); the
# transformer blocks are stored stacked (`opera_gt.BlockStack`), the block index leading each leaf.
EXPORT_FORMAT = "acula_jax.encoder/3"
# What an export holds: parameters and BatchNorm running statistics (OPERA-CE/CT); the ViTs have
# no BatchStats, so their exports are unchanged.
EXPORT_VARIABLES = (nnx.Param, nnx.BatchStat)
HEADS_DIR = "heads"
HEADS_FORMAT = "acula_jax.heads/1"
# The teacher manifest's fields that zero-shot needs to embed class sentences as training embedded reports.
_TEACHER_FIELDS = ("model", "revision", "resolved_revision", "model_class", "layer", "pooling", "max_length",
                   "dtype", "normalize", "padding_side", "dim", "config")


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


def export_encoder(workdir, encoder: nnx.Module, model_config, *, write_more=None) -> pathlib.Path:
  """Writes the encoder alone (no optimizer) to `workdir/export` (see `write_export`)."""
  return write_export(pathlib.Path(workdir, EXPORT_DIR), encoder, model_config, write_more=write_more)


def _config_dict(model_config) -> dict:
  config = model_config.to_dict() if hasattr(model_config, "to_dict") else dict(model_config)
  return json.loads(json.dumps(config, default=list))


def nonfinite_keys(tree) -> list[str]:
  """'/'-joined paths of the leaves of a pure-dict tree that hold NaN or inf."""
  return ["/".join(str(getattr(k, "key", k)) for k in path)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
          if not np.isfinite(np.asarray(leaf)).all()]


def write_export(directory, encoder: nnx.Module, model_config, *, source=None,
                 write_more=None) -> pathlib.Path:
  """The export: `directory/encoder` (Orbax: parameters and BatchNorm statistics), what `write_more`
  adds (e.g. the projection heads) and `directory/manifest.json` (the model config to rebuild it).

  Refuses weights with NaN or inf, naming them. Everything is written to a staging sibling and
  swapped in by renames once complete, so a failed export leaves an earlier one intact.
  """
  directory = pathlib.Path(directory).absolute()
  state = nnx.state(encoder, EXPORT_VARIABLES).to_pure_dict()
  bad = nonfinite_keys(state)
  if bad:
    raise errors.DataError(directory, f"refusing to export non-finite weights: {', '.join(bad[:10])}"
                                      + (f" and {len(bad) - 10} more" if len(bad) > 10 else ""))
  staging = directory.with_name(f".{directory.name}.partial")
  if jax.process_index() == 0 and staging.exists():
    shutil.rmtree(staging)
  _sync("export-staging-clean")
  staging.mkdir(parents=True, exist_ok=True)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(staging / "encoder", state, force=True)
  if write_more is not None:
    write_more(staging)
  _sync("export-written")
  if jax.process_index() == 0:
    manifest = {"model": _config_dict(model_config), "format": EXPORT_FORMAT}
    if source:
      manifest["source"] = source
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
    previous = directory.with_name(f".{directory.name}.previous")
    shutil.rmtree(previous, ignore_errors=True)
    if directory.exists():
      os.replace(directory, previous)
    os.replace(staging, directory)
    shutil.rmtree(previous, ignore_errors=True)
  _sync("export-swapped")
  return directory


def _sync(name: str):
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def _export_dir(path) -> pathlib.Path:
  """Accepts an export directory or a workdir that contains one."""
  path = pathlib.Path(path).absolute()
  for candidate in (path, path / EXPORT_DIR):
    if (candidate / "manifest.json").is_file():
      return candidate
  raise errors.DataError(path, "no exported encoder here (expected manifest.json or export/manifest.json)")


def read_export_manifest(path) -> tuple[pathlib.Path, dict]:
  """(the export directory of `path`, its manifest), refusing exports of another format."""
  directory = _export_dir(path)
  try:
    manifest = json.loads((directory / "manifest.json").read_text())
  except (OSError, ValueError) as e:
    raise errors.DataError(directory, f"no readable manifest.json: {e}") from e
  if manifest.get("format") != EXPORT_FORMAT:
    raise errors.DataError(directory, (
        f"export format {manifest.get('format')!r}; this version reads {EXPORT_FORMAT!r}. Write it "
        "again: `python -m acula_jax.tools.convert` for a released checkpoint, or retrain the run"))
  return directory, manifest


def load_encoder_params(path, encoder: nnx.Module) -> nnx.Module:
  """Loads exported encoder parameters (and BatchNorm statistics) into an encoder of the same shape."""
  directory, _ = read_export_manifest(path)
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
  directory, manifest = read_export_manifest(path)
  model_config = ml_collections.ConfigDict(manifest["model"])
  encoder = acula.build_encoder(model_config, rngs=nnx.Rngs(seed))
  return load_encoder_params(directory, encoder)


def export_heads(export_dir, model, config, teacher_manifest: dict) -> pathlib.Path:
  """Writes the projection heads to `export_dir/heads/` (see the module docstring), for zero-shot
  classification and retrieval; every process calls it, process 0 writes the manifest."""
  directory = pathlib.Path(export_dir, HEADS_DIR).absolute()
  directory.mkdir(parents=True, exist_ok=True)
  state = {"audio_head": nnx.to_pure_dict(nnx.state(model.audio_head, nnx.Param)),
           "text_head": nnx.to_pure_dict(nnx.state(model.text_head, nnx.Param)),
           "log_temperature": jnp.asarray(model.log_temperature[...])}
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(directory / "params", state, force=True)
  if jax.process_index() == 0:
    manifest = {"format": HEADS_FORMAT, "audio_dim": int(model.audio_head.in_dim), "text_dim": int(model.text_dim),
                "hidden_dim": int(config.heads.hidden_dim), "out_dim": int(config.heads.out_dim),
                "alignment": config.loss.alignment, "align_features": config.align_features,
                "teacher": {k: teacher_manifest.get(k) for k in _TEACHER_FIELDS}}
    fileio.write_text_atomic(directory / "manifest.json", json.dumps(manifest, indent=2, default=str))
  return directory


def _find_heads(path) -> pathlib.Path | None:
  path = pathlib.Path(path).absolute()
  for candidate in (path, path / HEADS_DIR, path / "export" / HEADS_DIR):
    if (candidate / "manifest.json").is_file() and (candidate / "params").is_dir():
      return candidate
  return None


def has_heads(path) -> bool:
  """Whether `path` (a heads folder, an export folder or a workdir) holds exported projection heads."""
  return _find_heads(path) is not None


def heads_dir(path) -> pathlib.Path:
  """Accepts a heads folder, an export folder or a workdir."""
  directory = _find_heads(path)
  if directory is not None:
    return directory
  raise errors.DataError(path, f"no exported projection heads (expected {HEADS_DIR}/manifest.json and "
                               f"{HEADS_DIR}/params; train.py writes them to export/{HEADS_DIR}/ when aligning)")


def load_heads(path) -> heads_lib.Heads:
  """The heads exported by `export_heads` under `path` (heads, export or workdir folder)."""
  directory = heads_dir(path)
  manifest = json.loads((directory / "manifest.json").read_text())
  if manifest.get("format") != HEADS_FORMAT:
    raise errors.DataError(directory, f"heads format {manifest.get('format')!r}, expected {HEADS_FORMAT!r}")
  heads = heads_lib.build_heads(manifest)
  target = {"audio_head": nnx.to_pure_dict(nnx.state(heads.audio, nnx.Param)),
            "text_head": nnx.to_pure_dict(nnx.state(heads.text, nnx.Param)),
            "log_temperature": jnp.zeros((), jnp.float32)}
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  with ocp.StandardCheckpointer() as checkpointer:
    restored = checkpointer.restore(directory / "params", target)
  for module, key in ((heads.audio, "audio_head"), (heads.text, "text_head")):
    state = nnx.state(module, nnx.Param)
    nnx.replace_by_pure_dict(state, restored[key])
    nnx.update(module, state)
  heads.log_temperature = float(restored["log_temperature"])
  return heads
