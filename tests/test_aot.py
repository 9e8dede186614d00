"""Ahead-of-time compilation for Cloud TPU (acula_jax.tools.aot) and the HLO analysis behind its report.

The step is compiled by libtpu for a v5e-4 topology (v5e:2x2) on this machine, no TPU needed.
"""
import functools
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

pytest.importorskip("libtpu", reason="compiling for TPU needs libtpu: pip install 'acula_jax[tpu]'")

from acula_jax.tools import accelerators  # pylint: disable=wrong-import-position
from acula_jax.tools import aot  # pylint: disable=wrong-import-position
from acula_jax.tools import hlo_analysis  # pylint: disable=wrong-import-position
from acula_jax import sharding  # pylint: disable=wrong-import-position
from acula_jax.models import acula  # pylint: disable=wrong-import-position
from acula_jax.models import attention  # pylint: disable=wrong-import-position
from acula_jax.models import opera_ce  # pylint: disable=wrong-import-position
from configs import acula as acula_config  # pylint: disable=wrong-import-position
from configs import demo  # pylint: disable=wrong-import-position

REPO = pathlib.Path(__file__).resolve().parents[1]
SLICE = "v5litepod-4"
TEXT_DIM = 24


def _tiny(depth=1, **overrides):
  """The tiny demo config at TPU-tile widths (128): TPU pads smaller arrays to (8, 128) tiles, so a
  32-wide model's per-device bytes would hardly shrink when sharded."""
  config = demo.get_config("tiny")
  config.model.update(depth=depth, width=128, decoder_width=128)
  config.heads.update(hidden_dim=128, out_dim=128)
  for key, value in overrides.items():
    node = config
    *path, leaf = key.split(".")
    for name in path:
      node = node[name]
    node[leaf] = value
  return config


@functools.lru_cache(maxsize=None)
def _report(mode="replicated", depth=1):
  overrides = {"param_sharding": mode}
  if mode == "fsdp":
    overrides.update({"mesh.data": 1, "mesh.fsdp": -1})
  return aot.run(_tiny(depth, **overrides), SLICE, dim_flag=TEXT_DIM)


def _tpu_devices(name=SLICE):
  return aot.topology_devices(accelerators.parse(name))


# ----------------------------------------------------------------------------
# The train step for TPU.


@pytest.mark.parametrize("mode", ["replicated", "fsdp"])
def test_step_compiles_for_tpu_and_fits(mode):
  report = _report(mode)
  assert report.fits
  d = report.data
  assert d["devices"] == 4 and d["topology"] == "v5e:2x2"
  assert d["mesh"] == ({"data": 4, "fsdp": 1} if mode == "replicated" else {"data": 1, "fsdp": 4})
  assert 0 < d["needed_bytes_per_device"] < d["hbm_bytes_per_device"]
  assert d["matmul_flops_per_step"] > 0 and d["roofline"]["step_s_lower_bound"] > 0


def test_fsdp_splits_the_state_over_devices():
  replicated, fsdp = _report("replicated").data, _report("fsdp").data
  # Replicated holds the whole state (and the batch shard) per device; FSDP about a quarter.
  assert replicated["memory_per_device"]["argument"] >= replicated["state_bytes"]
  assert fsdp["memory_per_device"]["argument"] < 0.5 * replicated["memory_per_device"]["argument"]


def test_replicated_all_reduces_gradients_and_gathers_no_activations():
  config = _tiny()
  d = _report("replicated").data
  collectives = d["collectives"]
  # The gradient of every parameter: bfloat16 compute hands XLA gradients in bfloat16 (reduced
  # before they are cast to the float32 parameters' dtype) or float32.
  assert collectives["all-reduce"]["bytes"] >= d["param_bytes"] / 2
  # The only gathers: the batch-level alignment loss's projected embeddings ([batch, out_dim]), not
  # a block's activations ([batch / devices, tokens, width], 64x larger here).
  embeddings = config.batch_size * config.heads.out_dim * 4
  assert collectives["all-gather"]["largest"] <= embeddings


def test_one_gradient_all_reduce_per_step_whatever_the_accumulation():
  """With grad_accum_steps=4 each device sums its micro-batches' gradients and they are reduced
  across devices once, after the loop: the step's all-reduces are those of the unaccumulated step,
  none inside the accumulation loop."""
  plain = _report("replicated").data["collectives"]["all-reduce"]
  accumulated = aot.run(_tiny(grad_accum_steps=4, batch_size=32), SLICE, dim_flag=TEXT_DIM).data
  reduce = accumulated["collectives"]["all-reduce"]
  # The float32 gradients once (and the metrics' mean): not 4x, as when every micro-batch reduced.
  assert reduce["bytes"] <= 1.05 * accumulated["param_bytes"], reduce
  assert reduce["count"] <= plain["count"], (reduce, plain)


def test_fsdp_gradients_reduce_once_whatever_the_accumulation():
  """FSDP with grad_accum_steps=4: the split parameters are gathered once before the micro-batch loop
  and the summed gradients reduce-scattered once after it (before: per layer and micro-batch)."""
  config = _tiny(2, grad_accum_steps=4, batch_size=32, param_sharding="fsdp", **{"mesh.data": 1, "mesh.fsdp": -1})
  d = aot.run(config, SLICE, dim_flag=TEXT_DIM).data
  collectives, params = d["collectives"], d["param_bytes"]
  scattered = collectives["reduce-scatter"]["bytes"] + collectives.get("all-reduce", {}).get("bytes", 0)
  assert params <= scattered <= 1.05 * params, collectives
  # The weights once, plus each micro-batch's projected embeddings for the batch-level alignment loss.
  embeddings = 4 * 2 * (config.batch_size // 4) * config.heads.out_dim * 4
  assert collectives["all-gather"]["bytes"] <= 1.05 * params + embeddings, collectives


def _trip_counts(report):
  return sorted(loop["trip_count"] for loop in report["loops"])


def test_auto_attention_compiles_to_the_flash_kernel_for_tpu(monkeypatch):
  """A step traced on CPU for TPU gets Pallas' flash attention, per batch shard (no gathers of q/k/v),
  not the CPU kernel (whose loops over a batch-sharded axis would gather q/k/v across devices)."""
  auto = _report("replicated", depth=2).data
  hlo = auto["_hlo"]
  for kernel in ("flash_attention", "flash_mha_bwd_dq", "flash_mha_bwd_dkv"):
    assert f"%{kernel}" in hlo, kernel
  xla = functools.partial(attention.dot_product_attention, implementation="xla")
  monkeypatch.setattr(attention, "dot_product_attention", xla)
  plain = aot.run(_tiny(2, param_sharding="replicated"), SLICE, dim_flag=TEXT_DIM).data
  assert "tpu_custom_call" not in plain["_hlo"]
  assert _trip_counts(auto) == _trip_counts(plain) and len(auto["loops"]) >= 2  # the scanned blocks
  assert auto["collectives"]["all-gather"]["bytes"] <= plain["collectives"]["all-gather"]["bytes"]
  blocked = functools.partial(attention.dot_product_attention, implementation="blocked")
  monkeypatch.setattr(attention, "dot_product_attention", blocked)
  cpu_kernel = aot.run(_tiny(2, param_sharding="replicated"), SLICE, dim_flag=TEXT_DIM).data
  assert len(cpu_kernel["loops"]) > len(auto["loops"])  # what "auto" traced before it followed the target


def test_auto_settings_follow_the_compile_target():
  """dtype/remat "auto": bfloat16 and rematerialised blocks in the TPU program, float32 and none on CPU."""
  d = _report("replicated").data
  assert (d["dtype"], d["remat"]) == ("bfloat16", "dots")
  assert "bf16[" in d["_hlo"]
  assert acula.resolve_auto("dtype", "auto", "cpu") == "float32"
  assert acula.resolve_auto("remat", "auto", "cpu") == "none"
  assert acula.resolve_auto("dtype", "float32", "tpu") == "float32"  # an explicit choice stays


def test_flash_attention_flops_are_counted_from_the_kernels():
  """Pallas kernels are custom calls XLA cannot look into: their matmuls are counted by kernel name
  (forward 2, backward dq 3 and dkv 4 [n, n] x d matmuls), matching the analytic count."""
  b, n, h, d = 4, 256, 2, 64
  device = jax.sharding.SingleDeviceSharding(_tpu_devices()[0])
  spec = jax.ShapeDtypeStruct((b, n, h, d), jnp.bfloat16, sharding=device)
  loss = lambda q, k, v: jnp.sum(attention.flash_attention(q, k, v).astype(jnp.float32) ** 2)
  forward = jax.jit(loss).lower(spec, spec, spec).compile()
  both = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(spec, spec, spec).compile()
  one_matmul = 2 * b * h * n * n * d
  assert hlo_analysis.analyze(forward.as_text()).matmul_flops == 2 * one_matmul
  assert hlo_analysis.analyze(both.as_text()).matmul_flops == (2 + 3 + 4) * one_matmul


def test_fsdp_gathers_weights_not_activations():
  """FSDP's collectives per step stay within a few times the parameter bytes: each block's weights
  are gathered where it runs and activations stay batch-sharded (before: activations were
  gathered, 20x the parameters at the paper config)."""
  d = _report("fsdp", depth=2).data
  moved = sum(c["bytes"] for c in d["collectives"].values())
  assert moved <= 3 * d["param_bytes"], d["collectives"]
  # Gradients are reduce-scattered into each device's part, most of them: XLA all-reduces some
  # gradients computed by reductions (biases, a third of this tiny model's bytes; 3% at the paper
  # config) and the loss.
  collectives = d["collectives"]
  assert collectives["reduce-scatter"]["bytes"] >= d["param_bytes"] / 2, collectives
  assert collectives["all-reduce"]["bytes"] <= collectives["reduce-scatter"]["bytes"] / 2, collectives


def _tiny_opera_ce():
  config = acula_config.get_config("encoder=opera_ce")
  config.model.update(opera_ce.TINY_CONFIG)
  config.data.clip_frames = 32
  config.heads.update(hidden_dim=32, out_dim=16)
  config.batch_size = 8
  return config


def test_batchnorm_encoder_reduces_gradients_once_whatever_the_accumulation():
  """OPERA-CE with grad_accum_steps=4 runs per device too (BatchNorm synchronised, COLA over the
  gathered batch): its gradients are all-reduced in one piece, once. Reduced per micro-batch they
  alone would be 4x the parameter bytes; the rest are BatchNorm statistics, synced per micro-batch."""
  config = _tiny_opera_ce()
  config.update(batch_size=32, grad_accum_steps=4)
  d = aot.run(config, SLICE, dim_flag=TEXT_DIM).data
  reduce = d["collectives"]["all-reduce"]
  assert reduce["largest"] >= d["param_bytes"], reduce
  assert reduce["bytes"] < 3 * d["param_bytes"], reduce


def test_depthwise_convolution_compiles_to_xla_convolutions_for_tpu(monkeypatch):
  auto = aot.run(_tiny_opera_ce(), SLICE, dim_flag=TEXT_DIM).data
  monkeypatch.setattr(opera_ce.DepthwiseConv, "__call__", nnx.Conv.__call__)
  forced = aot.run(_tiny_opera_ce(), SLICE, dim_flag=TEXT_DIM).data
  assert auto["matmul_flops_per_step"] == forced["matmul_flops_per_step"]
  assert auto["collectives"] == forced["collectives"] and _trip_counts(auto) == _trip_counts(forced)


def test_find_accum_doubles_until_the_step_fits(monkeypatch):
  tried = []

  def fake_compile(config, accelerator, devices, dim):
    del accelerator, devices, dim
    tried.append(config.grad_accum_steps)
    return aot.Report(config.grad_accum_steps >= 4, {"needed_bytes_per_device": 2**34 / config.grad_accum_steps})

  monkeypatch.setattr(aot, "compile_step", fake_compile)
  report = aot.run(_tiny(batch_size=32), SLICE, dim_flag=TEXT_DIM, find_accum=True)
  assert report.fits and tried == [1, 2, 4]
  tried.clear()
  monkeypatch.setattr(aot, "compile_step", lambda c, *a: (tried.append(c.grad_accum_steps),
                                                           aot.Report(False, {"needed_bytes_per_device": 1}))[1])
  report = aot.run(_tiny(batch_size=32), SLICE, dim_flag=TEXT_DIM, find_accum=True)
  assert not report.fits and tried == [1, 2, 4, 8]  # 32 / 16 = 2 rows would not cover 4 devices
  assert "no grad_accum_steps up to 8 fits" in report.data["find_accum"]


def test_text_width_comes_from_the_flag_the_manifest_or_the_paper(tmp_path):
  config = _tiny()
  config.data.teacher_dir = str(tmp_path)
  assert aot.text_dim(config, None)[0] == aot.PAPER_TEXT_DIM  # no manifest there
  (tmp_path / "manifest.json").write_text(json.dumps({"dim": 384}))
  assert aot.text_dim(config, None) == (384, f"{tmp_path}/manifest.json")
  assert aot.text_dim(config, 7)[0] == 7
  config.loss.align_weight = 0.0
  assert aot.text_dim(config, 7)[0] is None


def _run_cli(*args, cwd):
  env = dict(os.environ, ALLOW_MULTIPLE_LIBTPU_LOAD="1", PYTHONPATH=str(REPO))
  return subprocess.run([sys.executable, "-m", "acula_jax.tools.aot", *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=600, check=False)


def test_cli_prints_the_report_and_writes_json_and_hlo_from_any_folder(tmp_path):
  out = _run_cli(f"--config={REPO}/configs/demo.py:tiny", f"--accelerator_type={SLICE}",
                 f"--text_dim={TEXT_DIM}", f"--json={tmp_path}/r.json", f"--dump_hlo={tmp_path}/step.hlo",
                 cwd=tmp_path)
  assert out.returncode == 0, out.stderr[-3000:]
  for heading in ("versions", "slice", "mesh", "memory/dev", "FLOPs", "collectives", "roofline", "FITS"):
    assert heading in out.stdout
  saved = json.loads((tmp_path / "r.json").read_text())
  assert saved["fits"] and saved["accelerator"] == SLICE and "memory_per_device" in saved
  assert "ENTRY" in (tmp_path / "step.hlo").read_text()


def test_cli_exits_1_naming_the_memory_a_config_needs(tmp_path):
  # A 2^26-wide teacher: the text head alone is 8.6 GB of parameters, 26 GB with Adam's moments.
  out = _run_cli(f"--config={REPO}/configs/demo.py:tiny", f"--accelerator_type={SLICE}",
                 f"--text_dim={2**26}", f"--json={tmp_path}/r.json", cwd=tmp_path)
  assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-3000:]
  assert "DOES NOT FIT: needs" in out.stdout
  needed = float(out.stdout.split("DOES NOT FIT: needs ")[-1].split(" GiB")[0])
  assert needed > 16
  saved = json.loads((tmp_path / "r.json").read_text())
  assert not saved["fits"] and saved["needed_bytes_per_device"] == pytest.approx(needed * 2**30, rel=0.01)


def test_cli_refuses_an_unknown_accelerator(tmp_path):
  out = _run_cli(f"--config={REPO}/configs/demo.py:tiny", "--accelerator_type=v9-8", cwd=tmp_path)
  assert out.returncode == 2 and "unknown accelerator type 'v9-8'" in out.stderr


# ----------------------------------------------------------------------------
# The HLO analysis: loops, collectives, FLOPs.


def _scanned_matmuls(layers, rows, width):
  """x through `layers` tanh(x @ w) layers in a scan, and an SGD update: 3 matmuls per layer."""

  def step(w, x):
    def loss(w):
      body = lambda h, wi: (jnp.tanh(h @ wi), None)
      return jnp.sum(jax.lax.scan(body, x, w)[0])
    return w - 0.1 * jax.grad(loss)(w)

  expected_flops = 3 * layers * 2 * rows * width * width
  return step, expected_flops


def test_loops_and_collectives_are_counted_per_trip_on_tpu():
  layers, rows, width = 6, 64, 256
  step, expected = _scanned_matmuls(layers, rows, width)
  devices = _tpu_devices()
  mesh = jax.make_mesh((4,), ("d",), devices=devices, axis_types=(jax.sharding.AxisType.Auto,))
  w_sharding, x_sharding = NamedSharding(mesh, P(None, None, "d")), NamedSharding(mesh, P("d"))
  w = jax.ShapeDtypeStruct((layers, width, width), jnp.float32, sharding=w_sharding)
  x = jax.ShapeDtypeStruct((rows, width), jnp.float32, sharding=x_sharding)
  compiled = jax.jit(step, out_shardings=w_sharding).lower(w, x).compile()
  stats = hlo_analysis.analyze(compiled.as_text())
  assert stats.matmul_flops == expected / 4  # per device: a quarter of the rows each
  assert sorted(t for _, t in stats.loops) == [layers, layers] and not stats.unknown_trip_counts
  summary = stats.collective_summary()
  # Weights sharded over their columns: gathered once per layer forward and backward; the
  # gradients reduce-scattered once per layer (TPU fuses the scatter into an all-reduce).
  assert summary["all-gather"]["count"] == 2 * layers
  assert summary["reduce-scatter"]["count"] == layers and not summary["all-reduce"]["count"]
  assert summary["reduce-scatter"]["largest"] == width * width * 4  # the layer's whole gradient
  cost = compiled.cost_analysis()
  assert cost["flops"] < stats.matmul_flops / 2  # XLA's own count sees each loop body once


def test_hbm_traffic_of_a_loop_matches_the_unrolled_program():
  """The roofline's bytes: a scanned program is charged about what its unrolled twin moves (slices
  of the stacked per-layer buffers, not the buffers), and no more than XLA counts for the unrolled
  one (XLA also counts buffers the compiler keeps on chip)."""
  layers, rows, width = 8, 512, 512
  device = jax.sharding.SingleDeviceSharding(_tpu_devices()[0])
  w = jax.ShapeDtypeStruct((layers, width, width), jnp.float32, sharding=device)
  x = jax.ShapeDtypeStruct((rows, width), jnp.float32, sharding=device)

  def program(unroll):
    def step(w, x):
      def loss(w):
        return jnp.sum(jax.lax.scan(lambda h, wi: (jnp.tanh(h @ wi), None), x, w, unroll=unroll)[0])
      return w - 0.1 * jax.grad(loss)(w)
    compiled = jax.jit(step).lower(w, x).compile()
    return hlo_analysis.analyze(compiled.as_text()), compiled.cost_analysis()

  (rolled, _), (unrolled, xla_unrolled) = program(1), program(True)
  assert len(rolled.loops) == 2 and not unrolled.loops
  assert unrolled.hbm_bytes <= rolled.hbm_bytes <= 1.5 * unrolled.hbm_bytes
  assert unrolled.hbm_bytes <= xla_unrolled["bytes accessed"]
  parameters = layers * width * width * 4
  assert rolled.hbm_bytes >= 3 * parameters  # at least: read w, read the gradient, write w


def test_batched_matmuls_written_as_convolutions_count_exactly_on_tpu():
  """TPU's compiler writes batched einsums as padded or base-dilated convolutions."""
  b, h, n, d = 6, 6, 200, 64
  spec = jax.ShapeDtypeStruct((b, h, n, d), jnp.float32,
                              sharding=jax.sharding.SingleDeviceSharding(_tpu_devices()[0]))

  def scores_and_output(q, k, v):
    probs = jax.nn.softmax(jnp.einsum("bhqd,bhkd->bhqk", q, k), axis=-1)
    return jnp.einsum("bhqk,bhkd->bhqd", probs, v)

  loss = lambda q, k, v: jnp.sum(scores_and_output(q, k, v) ** 2)
  compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(spec, spec, spec).compile()
  stats = hlo_analysis.analyze(compiled.as_text())
  one_matmul = 2 * b * h * n * n * d
  assert stats.matmul_flops == pytest.approx(6 * one_matmul, rel=1e-6)  # 2 forward, 4 backward


def test_cpu_programs_are_counted_too():
  layers, rows, width = 5, 16, 32
  step, expected = _scanned_matmuls(layers, rows, width)
  cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
  w = jax.ShapeDtypeStruct((layers, width, width), jnp.float32, sharding=cpu)
  x = jax.ShapeDtypeStruct((rows, width), jnp.float32, sharding=cpu)
  stats = hlo_analysis.analyze(jax.jit(step).lower(w, x).compile().as_text())
  assert stats.matmul_flops == expected and not stats.unknown_trip_counts


def test_shape_bytes():
  assert hlo_analysis.shape_bytes("f32[8,128]{1,0:T(8,128)}") == 8 * 128 * 4
  assert hlo_analysis.shape_bytes("(bf16[2,3]{1,0}, s32[], pred[4])") == 12 + 4 + 4
  on_chip = "(f32[4]{0:T(128)S(1)}, f32[4]{0:T(128)})"  # S(1): TPU VMEM
  assert hlo_analysis.shape_bytes(on_chip) == 32 and hlo_analysis.shape_bytes(on_chip, hbm_only=True) == 16


# ----------------------------------------------------------------------------
# The slice catalogue and meshes over topologies.


@pytest.mark.parametrize("name, topology, chips, devices, hosts", [
    ("v2-8", "v2:2x2", 4, 8, 1), ("v3-32", "v3:4x4", 16, 32, 4), ("v4-8", "v4:2x2x1", 4, 4, 1),
    ("v4-32", "v4:2x2x4", 16, 16, 4), ("v5litepod-1", "v5e:1x1", 1, 1, 1),
    ("v5litepod-8", "v5e:2x4", 8, 8, 1), ("v5litepod-16", "v5e:4x4", 16, 16, 4),
    ("v5p-128", "v5:4x4x4", 64, 64, 16), ("v6e-8", "v6e:2x4", 8, 8, 1)])
def test_accelerator_names_map_to_topologies(name, topology, chips, devices, hosts):
  accelerator = accelerators.parse(name)
  assert (accelerator.topology_name, accelerator.chips, accelerator.devices, accelerator.hosts) == (
      topology, chips, devices, hosts)
  if name in ("v2-8", "v4-8", "v5litepod-8", "v5litepod-16", "v6e-8"):
    assert len(_tpu_devices(name)) == devices  # what libtpu builds for that name


@pytest.mark.parametrize("name, message", [
    ("v9-8", "unknown accelerator type"), ("v5litepod-6", "powers of two chips"),
    ("v4-6", "powers of two TensorCores")])
def test_bad_accelerator_names_are_refused(name, message):
  with pytest.raises(ValueError, match=message):
    accelerators.parse(name)


def test_per_device_capacities():
  assert accelerators.parse("v5litepod-8").hbm_bytes_per_device == 16 * 2**30
  assert accelerators.parse("v3-8").hbm_bytes_per_device == 16 * 2**30  # 32 GiB chips, 2 cores each
  assert accelerators.parse("v5p-8").peak_flops_per_device == 459e12  # megacore: a device is a chip


def test_mesh_over_the_devices_of_a_topology():
  config = _tiny(**{"mesh.data": 2, "mesh.fsdp": -1})
  mesh = sharding.make_mesh(config.mesh, devices=_tpu_devices())
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2}
  assert {d.platform for d in mesh.devices.flat} == {"tpu"}
  assert sharding.make_mesh(_tiny().mesh).devices.size == jax.device_count()  # default: this job's
  with pytest.raises(ValueError, match="does not use the 4 devices"):
    sharding.make_mesh(_tiny(**{"mesh.data": 3}).mesh, devices=_tpu_devices())


def test_needed_bytes_are_read_from_the_compile_error():
  message = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
             "temporaries (32.51G) exceeds available HBM (15.75G).")
  assert aot.needed_bytes_from_error(message) == pytest.approx(32.51 * 2**30)
  assert aot.needed_bytes_from_error("RESOURCE_EXHAUSTED: no figure") is None


def test_table_finds_the_largest_batch_that_fits(monkeypatch):
  """benchmarks/aot_table.py: memory linear in the batch (here 1 GiB + 0.3 GiB per example per device
  on 8 devices with 16 GiB) -> the largest multiple of 8 under 16 GiB, confirmed by compiling."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("aot_table", REPO / "benchmarks" / "aot_table.py")
  table = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(table)
  compiled = []

  def fake(encoder, accelerator, batch, out_dir):
    del encoder, accelerator, out_dir
    compiled.append(batch)
    need = (1 + 0.3 * batch / 8 + (0.5 if batch == 400 else 0)) * 2**30  # a bump the line misses
    return {"batch_size": batch, "needed_bytes_per_device": need, "hbm_bytes_per_device": 16 * 2**30,
            "fits": need <= 16 * 2**30}

  monkeypatch.setattr(table, "compile_once", fake)
  best = table.largest_fitting_batch("opera_gt", "v5litepod-8", fake("", "", 48, ""), "unused")
  # The line predicts 400 (1 + 0.3 b / 8 <= 16); 400 needs 16.5 GiB, so it steps down to 392,
  # and 400 is the next multiple that does not fit.
  assert best["batch_size"] == 392 and best["fits"]
  assert compiled[2:] == [400, 392, 400]
