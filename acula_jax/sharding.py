"""Device mesh and shardings, declared once.

The skeleton trains data-parallel: parameters and optimizer state are replicated, batches are split over
the `data` axis. FSDP (sharding parameters over an `fsdp` axis) is issue #5.
"""
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P


def make_mesh() -> jax.sharding.Mesh:
  """A 1-D `data` mesh over every device of every process."""
  return jax.make_mesh((jax.device_count(),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh) -> NamedSharding:
  """Leading (batch) dimension split over `data`."""
  return NamedSharding(mesh, P("data"))


def shard_batch(batch: dict, mesh) -> dict:
  """This process's slice of the global batch -> global arrays sharded over `data`."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)
