r"""Weak scaling of the AcuLa train step over 1/2/4/8 simulated CPU devices, with a loss check; TPU estimate.

  PYTHONPATH=. .venv/bin/python benchmarks/scaling.py [--devices=1,2,4,8] [--per_device_batch=4]
      [--steps=3] [--text_dim=384] [--rtol=1e-4] [--paper_batches=2,4] [--no_paper_flops] [--json]

Weak scaling: each device count N runs in its own child process with
`XLA_FLAGS=--xla_force_host_platform_device_count=N JAX_PLATFORMS=cpu`, the per-device batch fixed, so the
global batch is N x --per_device_batch. Config: `configs/real_data.py` (align stage, linear CKA: the
demo-sized OPERA-GT ViT, MAE term + second unmasked pass), random waveforms and text embeddings (no data
files). Model, optimizer, sharded state, `sharding.make_mesh(config.mesh)` and `train.make_train_step` are
built as `train.train_and_evaluate` builds them; the step is lowered and compiled ahead of time (its
`cost_analysis()` gives the FLOPs) and that compiled executable is what is timed.

Correctness: in the same child, the same step is built on a 1-device mesh (devices[:1]) and fed the same
global batch and keys; the losses of steps 0 and 1 (step 1 depends on the all-reduced gradients of step 0)
on N devices must equal the 1-device ones within --rtol.

Simulated devices share the host's cores, so no speedup is possible: on an honest CPU run, s/step grows
about linearly with the global batch and examples/s stays flat. What the curve shows is that the
data-parallel program is right (same loss) and what its per-device work and communication are.

Then (unless --no_paper_flops) the paper-size step, `configs/acula.py:encoder=opera_gt` (OPERA-GT ViT-S,
width 384, depth 12, 256 frames, transformer decoder, second unmasked pass, linear CKA, AdamW), is lowered
and compiled -- never run -- on 1 CPU device at each of --paper_batches (about 40 s and 2 GiB each); the
FLOPs per example (the difference between the two batches, which leaves out the per-step AdamW update;
with one batch B, FLOPs / B) turn into an estimated cost per epoch of 100,000 reports on a TPU v4-8 and on
one H100 at assumed MFUs. Prints markdown.
"""
import argparse
import json
import os
import pathlib
import platform
import shlex
import subprocess
import sys
import time

from machine_info import machine  # benchmarks/, on sys.path when run as a script

REPO = pathlib.Path(__file__).resolve().parents[1]
_RESULT_TAG = "@@RESULT@@ "

# Peak dense bf16 throughput, FLOP/s (vendor figures).
TPU_V4_CHIP = 275e12
TPU_V4_8_CHIPS = 4  # a v4-8 slice: 4 chips (8 TensorCores)
H100_SXM = 989e12
EPOCH_EXAMPLES = 100_000
MFUS = (0.3, 0.5)


def parse_args(argv=None):
  parser = argparse.ArgumentParser(
      description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog="\n".join(__doc__.splitlines()[1:]))
  parser.add_argument("--devices", default="1,2,4,8", help="simulated device counts, comma-separated")
  parser.add_argument("--per_device_batch", type=int, default=4, help="examples per device per step")
  parser.add_argument("--steps", type=int, default=3, help="timed steps per device count (after 2 untimed)")
  parser.add_argument("--text_dim", type=int, default=384, help="teacher width (MiniLM 384)")
  parser.add_argument("--rtol", type=float, default=1e-4, help="loss tolerance vs the 1-device mesh")
  parser.add_argument("--paper_batches", default="2,4",
                      help="batches at which the paper-size step is compiled (e.g. 2,4: the difference "
                      "gives FLOPs per extra example without the per-step optimizer cost)")
  parser.add_argument("--no_paper_flops", action="store_true", help="skip the paper-size compile")
  parser.add_argument("--json", action="store_true", help="print the results as JSON after the tables")
  parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # "N" or "paper"
  args = parser.parse_args(argv)
  args.devices = [int(d) for d in args.devices.split(",") if d.strip()]
  args.paper_batches = [int(b) for b in args.paper_batches.split(",") if b.strip()]
  if not args.devices or min(args.devices) < 1:
    parser.error("--devices must list counts >= 1")
  if not args.paper_batches or min(args.paper_batches) < 1:
    parser.error("--paper_batches must list batches >= 1")
  for name in ("per_device_batch", "steps", "text_dim"):
    if getattr(args, name) < 1:
      parser.error(f"--{name} must be >= 1")
  return args


# ----------------------------------------------------------------------------------------------------
# Child processes.


def _build(config, text_dim, mesh):
  """(jitted step, sharded state, num params) as train.train_and_evaluate builds them, on `mesh`."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from acula_jax import sharding, train  # pylint: disable=g-import-not-at-top
  from acula_jax.models import acula  # pylint: disable=g-import-not-at-top

  model = acula.AculaModel(config, text_dim, rngs=nnx.Rngs(config.seed))
  num_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
  tx, _ = train.create_optimizer(config, total_steps=10_000)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  graphdef, state = nnx.split((model, optimizer))
  state_sharding = sharding.state_shardings(state, mesh, config.param_sharding)
  state = jax.device_put(state, state_sharding)
  step = train.make_train_step(graphdef, config, state_sharding, sharding.batch_sharding(mesh))
  return step, state, num_params


def _inputs(config, batch, text_dim, seed=0):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from acula_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  waves = (rng.standard_normal((batch, input_pipeline.clip_samples(config))) * 0.1).astype(np.float32)
  text = rng.standard_normal((batch, text_dim)).astype(np.float32)
  return {"audio": waves, "text_embedding": text}


def _compile(step, state, batch, rng):
  """(compiled executable, its cost_analysis flops, the lowered module's flops, compile seconds)."""
  start = time.perf_counter()
  lowered = step.lower(state, batch, rng)
  compiled = lowered.compile()
  seconds = time.perf_counter() - start
  return compiled, _flops(compiled.cost_analysis()), _flops(lowered.cost_analysis()), seconds


def _flops(cost):
  if isinstance(cost, (list, tuple)):  # older jax: one dict per executable/partition
    cost = cost[0] if cost else {}
  return float(cost.get("flops", float("nan"))) if cost else float("nan")


def run_devices(args) -> dict:
  """One device count: AOT compile, time, and check the loss against a 1-device mesh."""
  sys.path.insert(0, str(REPO))
  import jax  # pylint: disable=g-import-not-at-top
  from jax.sharding import AxisType  # pylint: disable=g-import-not-at-top
  from acula_jax import sharding  # pylint: disable=g-import-not-at-top
  from configs import real_data  # pylint: disable=g-import-not-at-top

  n = jax.device_count()
  config = real_data.get_config("loss=linear_cka")
  config.batch_size = args.per_device_batch * n
  host_batch = _inputs(config, config.batch_size, args.text_dim)
  rng = jax.random.key(0)

  mesh = sharding.make_mesh(config.mesh)
  step, state, num_params = _build(config, args.text_dim, mesh)
  batch = sharding.shard_batch(host_batch, mesh)
  compiled, flops, lowered_flops, compile_s = _compile(step, state, batch, rng)

  losses, times = [], []
  for i in range(2 + args.steps):  # steps 0 and 1 are the checked (untimed) ones
    start = time.perf_counter()
    state, metrics = compiled(state, batch, jax.random.fold_in(rng, i))
    jax.block_until_ready((state, metrics))
    if i >= 2:
      times.append(time.perf_counter() - start)
    if i < 2:
      losses.append(float(metrics["loss"]))

  ref_losses = losses
  if n > 1:
    one = jax.make_mesh((1, 1), sharding.BATCH_AXES, axis_types=(AxisType.Auto, AxisType.Auto),
                        devices=jax.devices()[:1])
    ref_step, ref_state, _ = _build(config, args.text_dim, one)
    ref_batch = sharding.shard_batch(host_batch, one)
    ref_losses = []
    for i in range(2):
      ref_state, ref_metrics = ref_step(ref_state, ref_batch, jax.random.fold_in(rng, i))
      ref_losses.append(float(ref_metrics["loss"]))
  rel = [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(losses, ref_losses)]
  return dict(devices=n, mesh=dict(mesh.shape), global_batch=config.batch_size, num_params=num_params,
              flops_compiled=flops, flops_lowered=lowered_flops, compile_s=compile_s, step_s=times,
              losses=losses, ref_losses=ref_losses, rel_diff=rel, ok=bool(max(rel) <= args.rtol),
              model=f"width {config.model.width}, depth {config.model.depth}, {config.data.clip_frames} "
              f"frames, align_features={config.align_features}")


def run_paper(args) -> dict:
  """FLOPs of the paper-size step from its compiled cost analysis; the step is never run."""
  sys.path.insert(0, str(REPO))
  import jax  # pylint: disable=g-import-not-at-top
  from acula_jax import sharding  # pylint: disable=g-import-not-at-top
  from configs import acula as acula_config  # pylint: disable=g-import-not-at-top

  config = acula_config.get_config("encoder=opera_gt")
  mesh = sharding.make_mesh(config.mesh)
  out = dict(devices=jax.device_count(), per_batch=[],
             model=f"OPERA-GT width {config.model.width}, depth {config.model.depth}, heads "
             f"{config.model.num_heads}, {config.data.clip_frames} frames, decoder {config.model.decoder} "
             f"width {config.model.decoder_width} depth {config.model.decoder_depth}, mask "
             f"{config.model.mask_ratio}, align_features={config.align_features}, loss "
             f"{config.loss.alignment}, {config.model.dtype}")
  for batch_size in args.paper_batches:
    config.batch_size = batch_size
    step, state, num_params = _build(config, args.text_dim, mesh)
    batch = sharding.shard_batch(_inputs(config, batch_size, args.text_dim), mesh)
    _, flops, lowered_flops, compile_s = _compile(step, state, batch, jax.random.key(0))
    out["num_params"] = num_params
    out["per_batch"].append(dict(batch=batch_size, flops_compiled=flops, flops_lowered=lowered_flops,
                                 compile_s=compile_s))
    print(f"[paper] batch {batch_size}: {flops:.4g} FLOPs, compiled in {compile_s:.0f} s",
          file=sys.stderr, flush=True)
    del step, state, batch
  out["analytic_flops_per_example"] = analytic_flops_per_example(config)
  return out


def analytic_flops_per_example(config) -> float:
  """Matmul FLOPs of one training example (forward x 3), for a sanity check of XLA's count.

  Per transformer block of n tokens and width d: 24 n d^2 (qkv, proj, MLP 4x) + 4 n^2 d (scores and
  values). Masked encoder pass on the visible tokens + cls, decoder on all tokens + cls, a second full
  encoder pass; heads, patch embedding and the log-mel are left out (small).
  """
  m = config.model
  tokens = (m.spec_shape[0] // 4) * (m.spec_shape[1] // 4)
  visible = int(tokens * (1 - m.mask_ratio)) + 1
  block = lambda n, d: 24 * n * d * d + 4 * n * n * d
  forward = m.depth * block(visible, m.width) + m.decoder_depth * block(tokens + 1, m.decoder_width)
  if config.align_features == "full":
    forward += m.depth * block(tokens + 1, m.width)
  return 3.0 * forward


# ----------------------------------------------------------------------------------------------------
# Driver.


def _child(args, which, device_count):
  argv = [sys.executable, str(pathlib.Path(__file__).resolve()), f"--child={which}",
          f"--per_device_batch={args.per_device_batch}", f"--steps={args.steps}",
          f"--text_dim={args.text_dim}", f"--rtol={args.rtol}",
          f"--paper_batches={','.join(map(str, args.paper_batches))}"]
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=" ".join(flags + [f"--xla_force_host_platform_device_count={device_count}"]))
  print(f"[{which}] XLA_FLAGS={env['XLA_FLAGS']} {shlex.join(argv[1:])}", file=sys.stderr, flush=True)
  start = time.perf_counter()
  proc = subprocess.run(argv, env=env, cwd=REPO, stdout=subprocess.PIPE, text=True)
  if proc.returncode:
    raise SystemExit(f"child {which} failed (exit {proc.returncode}); its stderr is above")
  lines = [line for line in proc.stdout.splitlines() if line.startswith(_RESULT_TAG)]
  result = json.loads(lines[-1][len(_RESULT_TAG):])
  result["child_wall_s"] = time.perf_counter() - start
  return result


def _mean(xs):
  return sum(xs) / len(xs)


def _tflop(x):
  return f"{x / 1e12:.3f}"


def report(args, scaling, paper, command) -> str:
  import jax  # pylint: disable=g-import-not-at-top
  lines = [f"machine: {machine()}, Python {platform.python_version()}, jax {jax.__version__}",
           f"command: `{command}`", ""]
  if scaling:
    base = scaling[0]
    base_eps = base["global_batch"] / _mean(base["step_s"])
    lines += [
        f"### Weak scaling, {args.per_device_batch} examples per simulated CPU device "
        f"(configs/real_data.py align stage: {base['model']}, {base['num_params'] / 1e6:.2f}M params)",
        "",
        "| devices (mesh) | global batch | compiled GFLOPs per device (x devices) | GFLOPs / example | "
        "compile s | s/step (timed) | examples/s | examples/s vs 1st row | loss step 0 (1-device ref) | "
        "loss step 1 (1-device ref) | max rel diff | check |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in scaling:
      step = _mean(r["step_s"])
      eps = r["global_batch"] / step
      total = r["flops_compiled"] * r["devices"]
      lines.append(
          f"| {r['devices']} ({r['mesh']['data']}x{r['mesh']['fsdp']}) | {r['global_batch']} | "
          f"{r['flops_compiled'] / 1e9:.2f} ({total / 1e9:.2f}) | {total / r['global_batch'] / 1e9:.3f} | "
          f"{r['compile_s']:.1f} | {step:.3f} ({', '.join(f'{s:.3f}' for s in r['step_s'])}) | "
          f"{eps:.1f} | {eps / base_eps:.2f} | {r['losses'][0]:.6f} ({r['ref_losses'][0]:.6f}) | "
          f"{r['losses'][1]:.6f} ({r['ref_losses'][1]:.6f}) | {max(r['rel_diff']):.1e} | "
          f"{'ok' if r['ok'] else 'FAIL'} (rtol {args.rtol:g}) |")
    lines += [
        "",
        "XLA's compiled cost analysis counts one device's partitioned program; the lowered (unpartitioned) "
        "module's count is " + ", ".join(f"{r['flops_lowered'] / 1e9:.2f}" for r in scaling) +
        " GFLOPs for the rows above. All devices share this machine's cores, so examples/s cannot grow "
        "with the device count; s/step should grow about linearly with the global batch.", ""]
  if paper:
    rows = paper["per_batch"]
    lines += [
        f"### Paper-size step FLOPs (compiled on {paper['devices']} CPU device, not run): {paper['model']}, "
        f"{paper['num_params'] / 1e6:.2f}M params",
        "",
        "| batch | compiled TFLOPs / step | TFLOPs / example | lowered TFLOPs / step | compile s |",
        "|---|---|---|---|---|"]
    for r in rows:
      lines.append(f"| {r['batch']} | {_tflop(r['flops_compiled'])} | "
                   f"{_tflop(r['flops_compiled'] / r['batch'])} | {_tflop(r['flops_lowered'])} | "
                   f"{r['compile_s']:.0f} |")
    per_example = rows[0]["flops_compiled"] / rows[0]["batch"]
    how = f"compiled FLOPs at batch {rows[0]['batch']} / {rows[0]['batch']}"
    if len(rows) > 1:
      a, b = rows[0], rows[-1]
      per_example = (b["flops_compiled"] - a["flops_compiled"]) / (b["batch"] - a["batch"])
      how = f"(FLOPs at batch {b['batch']} - at batch {a['batch']}) / {b['batch'] - a['batch']}"
    lines += [
        "",
        f"Analytic cross-check (matmuls only, 3 x forward): {_tflop(paper['analytic_flops_per_example'])} "
        f"TFLOPs / example vs XLA's {_tflop(per_example)}.",
        "",
        f"**Estimate, not a measurement**: F = {how} = {per_example:.4g} FLOPs per example; one epoch = "
        f"{EPOCH_EXAMPLES:,} reports -> {EPOCH_EXAMPLES} x F = {EPOCH_EXAMPLES * per_example:.4g} FLOPs.",
        "",
        "| hardware | peak bf16 FLOP/s | assumed MFU | epoch time = FLOPs / (peak x MFU) |",
        "|---|---|---|---|"]
    epoch_flops = EPOCH_EXAMPLES * per_example
    for name, peak in ((f"TPU v4-8 ({TPU_V4_8_CHIPS} chips x 275 TFLOP/s)", TPU_V4_CHIP * TPU_V4_8_CHIPS),
                       ("1 x H100 SXM (989 TFLOP/s dense)", H100_SXM)):
      for mfu in MFUS:
        seconds = epoch_flops / (peak * mfu)
        lines.append(f"| {name} | {peak / 1e12:.0f}e12 | {mfu:.0%} | {epoch_flops:.3g} / "
                     f"({peak / 1e12:.0f}e12 x {mfu}) = {seconds:.0f} s = {seconds / 60:.1f} min |")
  return "\n".join(lines)


def main(argv=None):
  args = parse_args(argv)
  if args.child is not None:
    result = run_paper(args) if args.child == "paper" else run_devices(args)
    print(_RESULT_TAG + json.dumps(result), flush=True)
    return
  command = shlex.join([os.path.relpath(sys.executable, REPO) if sys.executable.startswith(str(REPO))
                        else sys.executable, os.path.relpath(__file__, REPO)] + sys.argv[1:])
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  scaling = [_child(args, str(n), n) for n in args.devices]
  paper = None if args.no_paper_flops else _child(args, "paper", 1)
  print(report(args, scaling, paper, command))
  if args.json:
    print(json.dumps(dict(scaling=scaling, paper=paper), indent=2))


if __name__ == "__main__":
  main()
