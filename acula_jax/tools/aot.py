r"""Compile the training step for a Cloud TPU slice ahead of time, on any machine, and report it.

  python -m acula_jax.tools.aot --config=configs/acula.py:encoder=opera_gt --accelerator_type=v5litepod-8 \
      [--config.batch_size=256 ...] [--text_dim=2560] [--find_accum] [--json=PATH] [--dump_hlo=PATH]

Check that a config fits before renting the slice. Needs `libtpu` (`pip install acula_jax[tpu]`), not
a TPU: JAX builds the slice's devices from a topology description, the step is traced on this machine
against abstract state and batches (no weights, no data) and compiled by libtpu into the program the
TPU would run. The step is `train.make_train_step` with the config's shardings, mesh and
accumulation, exactly what `acula_jax.main` would run there.

Printed: versions, topology and mesh, parameter and state bytes, the per-device memory of the program
against the chip's HBM (FITS or DOES NOT FIT), matmul FLOPs per step and per example with loop trip
counts included, every collective with its count and bytes per step, lowering and compile times, and
a roofline bound on step time (a bound from the chip's peak FLOP/s and HBM bandwidth, not a
measurement). Exit status: 0 when it fits, 1 when it does not (with the GiB needed), 2 on bad flags.
`--find_accum` doubles `grad_accum_steps` until the step fits.

The text head's input width comes from `--text_dim`, else the manifest in `config.data.teacher_dir`,
else 2560 (MedGemma-4B, the paper's teacher); configs without alignment have no text head.
Only one process may hold libtpu at a time; set ALLOW_MULTIPLE_LIBTPU_LOAD=1 to run several.
"""
import dataclasses
import importlib.metadata
import os
import re
import sys
import time

from absl import app
from absl import flags
from flax import nnx
import jax
import jax.numpy as jnp

from acula_jax import config_files
from acula_jax import errors
from acula_jax import fileio
from acula_jax import input_pipeline
from acula_jax import sharding
from acula_jax import train
from acula_jax.data import records
from acula_jax.models import acula
from acula_jax.tools import accelerators
from acula_jax.tools import hlo_analysis

PAPER_TEXT_DIM = 2560  # MedGemma-4B's hidden size
_OOM = re.compile(r"RESOURCE_EXHAUSTED|[Rr]an out of memory|exceeds? .*memory|Out of memory")
_SIZE = re.compile(r"([0-9.]+)\s*([KMGT]i?B|[KMGT]\b|bytes)")

FLAGS = flags.FLAGS
@dataclasses.dataclass
class Report:
  """One compiled step: what `format_report` prints and --json writes."""
  fits: bool
  data: dict


def topology_devices(accelerator: accelerators.Accelerator) -> list:
  """The slice's devices as libtpu describes them (no TPU needed)."""
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top  (needs libtpu at call time)
  try:
    topology = topologies.get_topology_desc(
        platform="tpu", topology_name=accelerator.topology_name,
        chip_config_name=accelerator.generation.chip_config,
        chips_per_host_bounds=accelerator.chips_per_host_bounds)
  except Exception as e:  # pylint: disable=broad-except
    raise errors.UsageError(f"cannot describe {accelerator.name} ({accelerator.topology_name}): {e}. "
                            "Is libtpu installed? pip install 'acula_jax[tpu]'") from None
  return list(topology.devices)


def text_dim(config, flag_value) -> tuple:
  """(teacher embedding width or None without alignment, where it came from)."""
  if config.loss.align_weight <= 0:
    return None, "no alignment loss"
  if flag_value:
    return flag_value, "--text_dim"
  teacher_dir = config.data.teacher_dir
  if teacher_dir and os.path.isfile(os.path.join(teacher_dir, records.MANIFEST)):
    manifest = records.read_manifest(teacher_dir)
    if "dim" not in manifest:
      raise errors.DataError(teacher_dir, "teacher manifest has no 'dim'; pass --text_dim")
    return int(manifest["dim"]), f"{teacher_dir}/{records.MANIFEST}"
  where = f"no manifest at {teacher_dir}; " if teacher_dir else ""
  return PAPER_TEXT_DIM, f"{where}MedGemma-4B's width; --text_dim to change"


def abstract_train_inputs(config, dim, mesh):
  """(graphdef, state, batch, rng) as shapes with the shardings the trainer declares."""
  total_steps = max(config.num_train_steps, 1)
  model, optimizer = nnx.eval_shape(
      lambda: train.create_model_and_optimizer(config, dim, total_steps, sharding.platform(mesh))[:2])
  graphdef, state = nnx.split((model, optimizer))
  state_sharding = sharding.state_shardings(state, mesh, config.param_sharding)
  with_sharding = lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)
  state = jax.tree.map(with_sharding, state, state_sharding)
  batch_sharding = sharding.batch_sharding(mesh)
  batch = {"audio": jax.ShapeDtypeStruct((config.batch_size, input_pipeline.clip_samples(config)),
                                         jnp.float32, sharding=batch_sharding)}
  if dim:
    batch["text_embedding"] = jax.ShapeDtypeStruct((config.batch_size, dim), jnp.float32,
                                                    sharding=batch_sharding)
  key = jax.eval_shape(lambda: jax.random.key(0))
  rng = jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=sharding.replicated(mesh))
  return graphdef, state, state_sharding, batch_sharding, batch, rng


def _tree_bytes(tree) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def needed_bytes_from_error(message: str):
  """The memory a RESOURCE_EXHAUSTED compile error says the program needs, in bytes (or None)."""
  units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "b": 1}
  found = [float(v) * units[u[0]] for v, u in _SIZE.findall(message)]
  return max(found) if found else None


def compile_step(config, accelerator, devices, dim) -> Report:
  """Lowers and compiles the train step for the slice; the report of its program."""
  mesh = sharding.make_mesh(config.mesh, devices=devices)
  train.check_renamed_keys(config)
  train.check_batch(config, mesh.devices.size)
  graphdef, state, state_sharding, batch_sharding, batch, rng = abstract_train_inputs(config, dim, mesh)
  step = train.make_train_step(graphdef, config, state_sharding, batch_sharding)
  params = nnx.state(nnx.merge(graphdef, state)[0], nnx.Param)
  data = {
      "accelerator": accelerator.name, "topology": accelerator.topology_name,
      "chip_config": accelerator.generation.chip_config, "chips": accelerator.chips,
      "devices": len(devices), "hosts": accelerator.hosts,
      "mesh": dict(mesh.shape), "param_sharding": config.param_sharding,
      "encoder": config.model.name,
      "dtype": acula.resolve_auto("dtype", config.model.dtype, sharding.platform(mesh)),
      "remat": acula.resolve_auto("remat", config.model.get("remat", "none"), sharding.platform(mesh)),
      "batch_size": config.batch_size,
      "grad_accum_steps": config.grad_accum_steps, "text_dim": dim,
      "param_bytes": _tree_bytes(params), "state_bytes": _tree_bytes(state),
      "hbm_bytes_per_device": accelerator.hbm_bytes_per_device,
      "versions": _versions(),
  }
  start = time.perf_counter()
  lowered = step.lower(state, batch, rng)
  data["lower_s"] = time.perf_counter() - start
  start = time.perf_counter()
  try:
    compiled = lowered.compile()
  except Exception as e:  # pylint: disable=broad-except
    if not _OOM.search(str(e)):
      raise
    data["compile_s"] = time.perf_counter() - start
    data["needed_bytes_per_device"] = needed_bytes_from_error(str(e))
    data["compile_error"] = str(e).splitlines()[0][:500]
    return Report(False, data)
  data["compile_s"] = time.perf_counter() - start
  data.update(_program_report(compiled, accelerator, config))
  return Report(data["needed_bytes_per_device"] <= accelerator.hbm_bytes_per_device, data)


def _versions() -> dict:
  out = {"jax": jax.__version__}
  for package in ("jaxlib", "libtpu", "flax"):
    try:
      out[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      out[package] = None
  return out


def _program_report(compiled, accelerator, config) -> dict:
  memory = compiled.memory_analysis()
  text = compiled.as_text()
  stats = hlo_analysis.analyze(text)
  per_device = {
      "argument": memory.argument_size_in_bytes, "output": memory.output_size_in_bytes,
      "alias": memory.alias_size_in_bytes, "temp": memory.temp_size_in_bytes,
      "code": memory.generated_code_size_in_bytes}
  needed = (per_device["argument"] + per_device["output"] - per_device["alias"] + per_device["temp"]
            + per_device["code"])
  devices = accelerator.devices
  compute_s = stats.matmul_flops / accelerator.peak_flops_per_device
  memory_s = stats.hbm_bytes / accelerator.hbm_bandwidth_per_device
  bound_s = max(compute_s, memory_s)
  cost = compiled.cost_analysis() or {}
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return {
      "memory_per_device": per_device, "needed_bytes_per_device": needed,
      "matmul_flops_per_device": stats.matmul_flops,
      "matmul_flops_per_step": stats.matmul_flops * devices,
      "matmul_flops_per_example": stats.matmul_flops * devices / config.batch_size,
      "xla_cost_analysis_flops_loops_once": float(cost.get("flops", 0.0)),
      "hbm_traffic_bytes_per_device": stats.hbm_bytes,
      "loops": [{"while": name, "trip_count": trips} for name, trips in stats.loops],
      "unknown_trip_counts": stats.unknown_trip_counts,
      "collectives": stats.collective_summary(),
      "roofline": {
          "compute_s": compute_s, "memory_s": memory_s, "step_s_lower_bound": bound_s,
          "bound_by": "compute" if compute_s >= memory_s else "memory",
          "examples_per_s_upper_bound": config.batch_size / bound_s if bound_s else None,
          "mfu_upper_bound": compute_s / bound_s if bound_s else None,
          "peak_flops_per_device": accelerator.peak_flops_per_device,
          "hbm_bandwidth_per_device": accelerator.hbm_bandwidth_per_device},
      "_hlo": text,
  }


def _gib(n) -> str:
  if n is None:
    return "?"
  return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"


def _bytes(n) -> str:
  for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
    if n >= size:
      return f"{n / size:.2f} {unit}"
  return f"{n:.0f} B"


def format_report(report: Report) -> str:
  d = report.data
  v = d["versions"]
  lines = [
      f"versions     jax {v['jax']}, jaxlib {v['jaxlib']}, libtpu {v['libtpu']}, flax {v['flax']}",
      f"slice        {d['accelerator']}: topology {d['topology']} ({d['chip_config']}), {d['chips']} chips, "
      f"{d['devices']} devices, {d['hosts']} host(s), HBM {_gib(d['hbm_bytes_per_device'])} per device",
      f"mesh         {d['mesh']}, parameters {d['param_sharding']}",
      f"step         {d['encoder']} ({d['dtype']}, remat {d['remat']}), global batch {d['batch_size']}, grad_accum_steps "
      f"{d['grad_accum_steps']}, text width {d['text_dim']} ({d['text_dim_source']})",
      f"state        parameters {_bytes(d['param_bytes'])}, parameters + optimizer {_bytes(d['state_bytes'])}",
      f"times        lowering {d['lower_s']:.1f} s, compile {d['compile_s']:.1f} s",
  ]
  if "memory_per_device" not in d:
    lines.append(f"memory       compile failed: {d['compile_error']}")
    lines.append(f"DOES NOT FIT: needs {_gib(d['needed_bytes_per_device'])} per device (the compiler's figure) of "
                 f"{_gib(d['hbm_bytes_per_device'])} HBM")
    return "\n".join(lines)
  m = d["memory_per_device"]
  lines.append("memory/dev   " + ", ".join(f"{k} {_gib(m[k])}" for k in m)
               + f" -> needs {_gib(d['needed_bytes_per_device'])} of {_gib(d['hbm_bytes_per_device'])}")
  loops = ", ".join(str(x["trip_count"]) for x in d["loops"]) or "none"
  lines.append(f"FLOPs        {d['matmul_flops_per_step'] / 1e12:.3f} TFLOP per step, "
               f"{d['matmul_flops_per_example'] / 1e9:.1f} GFLOP per example (dots and convolutions of "
               f"the compiled program, loop trip counts multiplied in: {loops}; XLA's cost analysis, "
               f"loop bodies once: {d['xla_cost_analysis_flops_loops_once'] * d['devices'] / 1e12:.3f} TFLOP)")
  if d["unknown_trip_counts"]:
    lines.append(f"warning      {len(d['unknown_trip_counts'])} loop(s) with unreadable trip counts "
                 "counted once: FLOPs, traffic and collectives are lower bounds")
  lines.append("collectives  per step and device: " + "; ".join(
      f"{kind} {c['count']}x {_bytes(c['bytes'])}" for kind, c in d["collectives"].items() if c["count"])
      if any(c["count"] for c in d["collectives"].values()) else "collectives  none")
  r = d["roofline"]
  lines.append(
      f"roofline     a bound, not a measurement: step >= max({r['compute_s'] * 1e3:.1f} ms compute, "
      f"{r['memory_s'] * 1e3:.1f} ms HBM traffic of {_bytes(d['hbm_traffic_bytes_per_device'])}) = "
      f"{r['step_s_lower_bound'] * 1e3:.1f} ms ({r['bound_by']}-bound): at most "
      f"{r['examples_per_s_upper_bound']:.0f} examples/s, MFU at most {100 * r['mfu_upper_bound']:.0f}%")
  lines.append(("FITS" if report.fits else "DOES NOT FIT") + f": needs {_gib(d['needed_bytes_per_device'])}"
               f" per device of {_gib(d['hbm_bytes_per_device'])} HBM")
  return "\n".join(lines)


def run(config, accelerator_type, *, dim_flag=None, find_accum=False):
  """Compiles (and with find_accum, recompiles) the step; returns the last Report."""
  accelerator = accelerators.parse(accelerator_type)
  devices = topology_devices(accelerator)
  dim, dim_source = text_dim(config, dim_flag)
  config = config.copy_and_resolve_references()  # --find_accum changes it; the caller's stays as given
  while True:
    report = compile_step(config, accelerator, devices, dim)
    report.data["text_dim_source"] = dim_source
    if report.fits or not find_accum:
      return report
    next_accum = config.grad_accum_steps * 2
    micro_batch = config.batch_size // next_accum if config.batch_size % next_accum == 0 else 0
    if not micro_batch or micro_batch % len(devices):
      report.data["find_accum"] = (f"no grad_accum_steps up to {config.grad_accum_steps} fits: the next, "
                                   f"{next_accum}, would not give whole micro-batches over the devices")
      return report
    print(f"grad_accum_steps={config.grad_accum_steps} does not fit "
          f"({_gib(report.data['needed_bytes_per_device'])}); trying {next_accum}", flush=True)
    with config.unlocked():
      config.grad_accum_steps = next_accum


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.accelerator_type:
    raise app.UsageError("--accelerator_type is required, e.g. --accelerator_type=v5litepod-8")
  report = run(FLAGS.config, FLAGS.accelerator_type, dim_flag=FLAGS.text_dim, find_accum=FLAGS.find_accum)
  hlo = report.data.pop("_hlo", None)
  print(format_report(report))
  if "find_accum" in report.data:
    print(report.data["find_accum"])
  if FLAGS.dump_hlo and hlo is not None:
    fileio.write_text_atomic(FLAGS.dump_hlo, hlo)
  if FLAGS.json:
    fileio.write_json_atomic(FLAGS.json, dict(report.data, fits=report.fits))
  sys.exit(0 if report.fits else 1)


def _define_flags():
  """CLI flags, defined only when run as a program (importing this module defines none)."""
  config_files.define_config_flag("Training config file (as for acula_jax.main).")
  flags.DEFINE_string("accelerator_type", None, "Cloud TPU slice, e.g. v4-8, v5litepod-8, v5p-128, v6e-8.")
  flags.DEFINE_integer("text_dim", None, "Teacher embedding width; default: the teacher manifest, else "
                       f"{PAPER_TEXT_DIM} (MedGemma-4B).")
  flags.DEFINE_bool("find_accum", False, "Double grad_accum_steps until the step fits.")
  flags.DEFINE_string("json", None, "Also write the report as JSON to this path.")
  flags.DEFINE_string("dump_hlo", None, "Write the compiled (optimised, per-device) HLO text here.")
  flags.mark_flags_as_required(["config"])


if __name__ == "__main__":
  errors.run_program(main, _define_flags)
