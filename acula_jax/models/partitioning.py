"""Sharding hints inside the models, read from the mesh in context (`jax.sharding.use_abstract_mesh`,
which the train step sets); without one (evaluation, tests on one device) they do nothing.

Every axis of the training mesh splits the batch (`sharding.BATCH_AXES`); with `param_sharding=fsdp`
the parameters are split too. The hints make XLA keep activations batch-sharded between blocks and
gather each block's weights where it runs (per layer, inside the scan), rather than gathering
activations to meet split weights.
"""
import jax
from jax.sharding import PartitionSpec as P


def batch_mesh():
  """The mesh in context, or None: without one, on one device, and inside a `shard_map` (whose body
  is one device's program)."""
  mesh = jax.sharding.get_abstract_mesh()
  return None if mesh.empty or mesh.size == 1 or mesh.manual_axes else mesh


def batch_sharded(x):
  """`x` constrained to be split over every mesh axis along its leading (batch) dimension."""
  mesh = batch_mesh()
  if mesh is None or x.shape[0] % mesh.size:
    return x
  return jax.lax.with_sharding_constraint(x, P(mesh.axis_names))


def gathered(tree):
  """Every leaf of `tree` constrained to be whole on each device: one block's weights, all-gathered
  where the block runs (a no-op when they are replicated already); their gradients reduce-scatter."""
  if batch_mesh() is None:
    return tree
  return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, P()), tree)


def manual_batch_axes() -> tuple:
  """The mesh axes a `shard_map` in context runs per device, in mesh order; () outside one.

  Inside the training step's per-device program (`train._per_device_accumulation`) every axis is
  manual and each splits the batch, so batch-level statistics and losses combine them to stay those
  of the whole batch.
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return ()
  return tuple(axis for axis in mesh.axis_names if axis in mesh.manual_axes)


def gather_batch(x):
  """`x` [rows, ...] of this device -> those of every device (same order as the global batch), when
  run per device; `x` itself otherwise. Its gradient sends each device back its rows' part."""
  axes = manual_batch_axes()
  return jax.lax.all_gather(x, axes, tiled=True) if axes else x
