"""Cloud TPU slices by their accelerator names (v4-8, v5litepod-8, v5p-128, v6e-8, ...).

One catalogue for the launcher (`launch/tpu.py`: how many hosts to address) and the ahead-of-time
compiler (`acula_jax.tools.aot`: the topology to compile for and the per-device HBM, peak FLOP/s and HBM
bandwidth to judge the program by). Standard library only (with `acula_jax.errors`): the launcher runs
on a laptop without JAX.

Chip figures are Cloud TPU's published per-chip specifications (bf16 peak; HBM capacity and
bandwidth). A device is what JAX sees: one chip on v4, v5p (megacore), v5e and v6e, one TensorCore
(half a chip) on v2 and v3.
"""
import dataclasses
import math
import re

from acula_jax import errors

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Generation:
  family: str                 # as in accelerator names: "v5litepod"
  topology_prefix: str        # as in jax.experimental.topologies' names: "v5e"
  torus_dims: int             # 2 (v2, v3, v5e, v6e) or 3 (v4, v5p)
  name_counts_cores: bool     # v2/v3/v4/v5p-N count TensorCores (2 per chip); v5e/v6e-N count chips
  devices_per_chip: int       # 2 on v2/v3 (one per TensorCore), 1 with megacore or one core
  chip_config: str            # "megacore" for v4/v5p
  max_chips_per_host: int     # a single-host slice holds up to this many chips
  hbm_gib_per_chip: float
  peak_tflops_per_chip: float  # bf16 (TPUs run float32 matmuls as bf16 passes at default precision)
  hbm_gbps_per_chip: float


GENERATIONS = {g.family: g for g in (
    Generation("v2", "v2", 2, True, 2, "default", 4, 16, 45, 600),
    Generation("v3", "v3", 2, True, 2, "default", 4, 32, 123, 900),
    Generation("v4", "v4", 3, True, 1, "megacore", 4, 32, 275, 1200),
    Generation("v5litepod", "v5e", 2, False, 1, "default", 8, 16, 197, 819),
    Generation("v5p", "v5", 3, True, 1, "megacore", 4, 95, 459, 2765),
    Generation("v6e", "v6e", 2, False, 1, "default", 8, 32, 918, 1640),
)}
_NAME = re.compile(r"^(" + "|".join(GENERATIONS) + r")-([1-9][0-9]*)$")
_MULTI_HOST_CHIPS = 4  # every generation's multi-host slices have 4 chips per host


@dataclasses.dataclass(frozen=True)
class Accelerator:
  """One slice: its topology for `jax.experimental.topologies` and its per-device capacities."""
  name: str
  generation: Generation
  chips: int
  torus: tuple               # chips along each axis, e.g. (2, 4) or (4, 4, 4)

  @property
  def hosts(self) -> int:
    if self.chips <= self.generation.max_chips_per_host:
      return 1
    return self.chips // _MULTI_HOST_CHIPS

  @property
  def devices(self) -> int:
    return self.chips * self.generation.devices_per_chip

  @property
  def topology_name(self) -> str:
    return f"{self.generation.topology_prefix}:{'x'.join(map(str, self.torus))}"

  @property
  def chips_per_host_bounds(self) -> tuple:
    """The chip block one host owns: the whole slice on a single host, else 2x2x1."""
    if self.hosts == 1:
      return tuple(self.torus) + (1,) * (3 - len(self.torus))
    return (2, 2, 1)

  @property
  def hbm_bytes_per_device(self) -> float:
    return self.generation.hbm_gib_per_chip * GIB / self.generation.devices_per_chip

  @property
  def peak_flops_per_device(self) -> float:
    return self.generation.peak_tflops_per_chip * 1e12 / self.generation.devices_per_chip

  @property
  def hbm_bandwidth_per_device(self) -> float:
    return self.generation.hbm_gbps_per_chip * 1e9 / self.generation.devices_per_chip


def _torus(chips: int, dims: int) -> tuple:
  """Cloud TPU's slice shapes (1x1, 2x4, 4x4, 2x2x1, 2x4x4): the shortest axis doubled until the
  chips are placed, axes ascending, unused ones last."""
  shape = [1] * dims
  while math.prod(shape) < chips:
    shape[shape.index(min(shape))] *= 2
  used = sorted(n for n in shape if n > 1)
  return tuple(used + [1] * (dims - len(used))) if used else tuple(shape)


def parse(name: str) -> Accelerator:
  """`v5litepod-8` -> its Accelerator; a UsageError that lists the families for anything else."""
  match = _NAME.match(name or "")
  if not match:
    raise errors.UsageError(f"unknown accelerator type {name!r}; expected FAMILY-SIZE with FAMILY one of "
                     f"{', '.join(GENERATIONS)} (e.g. v4-8, v5litepod-8, v5p-128, v6e-8)")
  generation, size = GENERATIONS[match.group(1)], int(match.group(2))
  chips = size // 2 if generation.name_counts_cores else size
  if chips < 1 or chips & (chips - 1) or (generation.name_counts_cores and size % 2):
    raise errors.UsageError(f"{name}: slices of {generation.family} come in powers of two "
                     f"{'TensorCores (2 per chip)' if generation.name_counts_cores else 'chips'}")
  return Accelerator(name, generation, chips, _torus(chips, generation.torus_dims))


def num_hosts(name: str) -> int:
  return parse(name).hosts
