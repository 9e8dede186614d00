"""Device mesh and shardings, declared once.

The mesh has two axes: `data` (pure data parallelism) and `fsdp` (data parallelism whose devices also
split the parameters and optimizer state). Batches are split over both axes. `config.param_sharding`
chooses between replicated parameters ("replicated", plain data parallelism) and "fsdp", where every
parameter's largest dimension divisible by the `fsdp` size is split over it; XLA inserts the
all-gathers and reduce-scatters. Axis types are stated explicitly (Auto): shardings are declared on the
jitted step's inputs and outputs, and XLA propagates them inside.
"""
import jax
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
import numpy as np

from acula_jax import errors

BATCH_AXES = ("data", "fsdp")


def make_mesh(mesh_config=None, devices=None) -> jax.sharding.Mesh:
  """A (data, fsdp) mesh over `devices` (default: all of this job's); -1 in one axis takes the rest.

  `devices` may be those of a TPU topology description (`acula_jax.tools.aot`), so that a step can be
  compiled for a slice this process does not run on.
  """
  data = mesh_config.data if mesh_config is not None else -1
  fsdp = mesh_config.fsdp if mesh_config is not None else 1
  devices = jax.devices() if devices is None else list(devices)
  count = len(devices)
  if data == -1 and fsdp == -1:
    raise errors.UsageError("at most one of mesh.data and mesh.fsdp can be -1")
  if data == -1:
    data = count // fsdp
  elif fsdp == -1:
    fsdp = count // data
  if data * fsdp != count:
    raise errors.UsageError(f"mesh data={data} x fsdp={fsdp} does not use the {count} devices")
  return jax.make_mesh((data, fsdp), BATCH_AXES, axis_types=(AxisType.Auto, AxisType.Auto),
                       devices=devices)


def platform(mesh) -> str:
  """The platform a program over `mesh` is compiled for ("cpu", "tpu", "gpu")."""
  return mesh.devices.flat[0].platform


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh) -> NamedSharding:
  """Leading (batch) dimension split over every device."""
  return NamedSharding(mesh, P(BATCH_AXES))


def fsdp_spec(shape, fsdp_size: int) -> P:
  """Splits the largest dimension divisible by the fsdp size; small or indivisible leaves replicate."""
  if fsdp_size == 1 or not shape:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % fsdp_size == 0 and shape[dim] >= fsdp_size:
      return P(*[None] * dim, "fsdp")
  return P()


def state_shardings(state, mesh, mode: str):
  """Shardings for the train state (parameters and optimizer state alike, leaf by leaf)."""
  if mode == "replicated":
    return jax.tree.map(lambda _: replicated(mesh), state)
  if mode == "fsdp":
    size = mesh.shape["fsdp"]
    return jax.tree.map(lambda x: NamedSharding(mesh, fsdp_spec(np.shape(x), size)), state)
  raise errors.UsageError(f"param_sharding must be 'replicated' or 'fsdp', got {mode!r}")


def shard_batch(batch: dict, mesh) -> dict:
  """This process's slice of the global batch -> global arrays split over the batch axes."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)
