r"""Does the Grain input pipeline keep up with the train step? Examples/s of each, same config.

  PYTHONPATH=. .venv/bin/python benchmarks/pipeline_throughput.py \
      --records_dir=workdir/real/train_records/physionet2016_bcdf,workdir/real/eval_records/yaseen2018 \
      --teacher_dir=workdir/real/teacher [--clip_frames=256] [--workers=0,2] [--batches=50] [--warmup=3]
      [--steps=5] [--combined_steps=5] [--batch=N] [--loss=linear_cka] [--json]

Config: `configs/real_data.py` (align stage, `loss=linear_cka`: the demo-sized OPERA-GT ViT, MAE term +
second unmasked pass + linear CKA, batch 32, 2 s = 64-frame crops), with `config.data.records_dir` and
`config.data.teacher_dir` from the flags. `--clip_frames=256` gives OPERA's 8.16 s crops (the model's
`spec_shape` follows, so the step sees 4x the tokens).

Three measurements, in this order, in one process:
  1. pipeline alone: `input_pipeline.create_train_dataset(config, TeacherTable(teacher_dir))` for
     each `config.data.num_workers` in --workers; the first batch (worker start-up, file opening) and
     --warmup batches are untimed, then --batches batches are timed. No model. Grain prefetches (4
     batches per reader, more with workers), so a few timed batches may come from buffers filled during
     the warm-up: keep --batches well above that.
  2. step alone: model, optimizer, state, mesh and `train.make_train_step` built exactly as
     `train.train_and_evaluate` builds them, fed one fixed batch taken from the pipeline (already
     sharded onto the devices); the first call (compilation) is untimed, then --steps steps are timed.
  3. both together (--combined_steps > 0), per --workers value: next(iterator) -> `sharding.shard_batch`
     -> step, as `train._train_loop` does (metrics fetched one step late), timed after one warm step.
     This is what training gets; on a small CPU it is below both 1 and 2, since they share the cores.

Ratio = pipeline examples/s / step examples/s: above 1 means the pipeline alone is faster than the step
alone. Prints a markdown table.
"""
import argparse
import gc
import json
import os
import pathlib
import platform
import shlex
import sys
import time

from machine_info import machine  # benchmarks/, on sys.path when run as a script

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # configs/ is not an installed package

DEFAULT_RECORDS = ("workdir/real/train_records/physionet2016_bcdf,"
                   "workdir/real/eval_records/yaseen2018")
DEFAULT_TEACHER = "workdir/real/teacher"


def parse_args(argv=None):
  parser = argparse.ArgumentParser(
      description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog="\n".join(__doc__.splitlines()[1:]))
  parser.add_argument("--records_dir", default=DEFAULT_RECORDS,
                      help="records folder(s), comma-separated (config.data.records_dir)")
  parser.add_argument("--teacher_dir", default=DEFAULT_TEACHER, help="config.data.teacher_dir")
  parser.add_argument("--clip_frames", type=int, default=None,
                      help="crop length in log-mel frames (default: the config's; 256 = 8.16 s)")
  parser.add_argument("--batch", type=int, default=None, help="global batch (default: the config's)")
  parser.add_argument("--loss", default="linear_cka", help="configs/real_data.py loss variant")
  parser.add_argument("--workers", default="0,2", help="config.data.num_workers values, comma-separated")
  parser.add_argument("--batches", type=int, default=50, help="timed pipeline batches per worker count")
  parser.add_argument("--warmup", type=int, default=3, help="untimed pipeline batches after the first")
  parser.add_argument("--steps", type=int, default=5, help="timed train steps (after the compile)")
  parser.add_argument("--combined_steps", type=int, default=5,
                      help="timed pipeline+step iterations per worker count (0: skip)")
  parser.add_argument("--json", action="store_true", help="print the results as JSON after the table")
  args = parser.parse_args(argv)
  args.workers = [int(w) for w in args.workers.split(",") if w.strip()]
  if not args.workers or min(args.workers) < 0:
    parser.error("--workers must list counts >= 0")
  for name in ("batches", "steps"):
    if getattr(args, name) < 1:
      parser.error(f"--{name} must be >= 1")
  if args.warmup < 0 or args.combined_steps < 0:
    parser.error("--warmup and --combined_steps must be >= 0")
  if args.clip_frames is not None and args.clip_frames < 1:
    parser.error("--clip_frames must be >= 1")
  return args


def build_config(args):
  from configs import real_data  # pylint: disable=g-import-not-at-top
  config = real_data.get_config(f"loss={args.loss}")
  config.data.records_dir = args.records_dir
  config.data.teacher_dir = args.teacher_dir
  if args.clip_frames is not None:
    config.data.clip_frames = args.clip_frames
    config.model.spec_shape = (args.clip_frames, 64)  # the ViT's positional table follows the crop
  if args.batch is not None:
    config.batch_size = args.batch
  return config


def _close(iterator):
  """Stops an iterator's prefetch threads / worker processes (grain has no public close on all)."""
  close = getattr(iterator, "close", None)
  if callable(close):
    close()
  del iterator
  gc.collect()


def time_pipeline(config, teacher, num_workers, batches, warmup):
  from acula_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  config = config.copy_and_resolve_references()
  config.data.num_workers = num_workers
  start = time.perf_counter()
  iterator = iter(input_pipeline.create_train_dataset(config, teacher))
  first = next(iterator)
  first_s = time.perf_counter() - start
  for _ in range(warmup):
    next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    batch = next(iterator)
  seconds = time.perf_counter() - start
  shapes = {k: tuple(v.shape) for k, v in batch.items()}
  _close(iterator)
  return dict(num_workers=num_workers, first_batch_s=first_s, seconds=seconds, batches=batches,
              batches_per_s=batches / seconds, examples_per_s=batches * config.batch_size / seconds,
              shapes=shapes), first


def build_step(config, text_dim):
  """Model, optimizer, sharded state, mesh and jitted step, as train.train_and_evaluate builds them."""
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
  mesh = sharding.make_mesh(config.mesh)
  state_sharding = sharding.state_shardings(state, mesh, config.param_sharding)
  state = jax.device_put(state, state_sharding)
  train_step = train.make_train_step(graphdef, config, state_sharding, sharding.batch_sharding(mesh))
  return train_step, state, mesh, num_params


def time_step(train_step, state, mesh, host_batch, steps):
  import jax  # pylint: disable=g-import-not-at-top
  from acula_jax import sharding  # pylint: disable=g-import-not-at-top
  batch = sharding.shard_batch(host_batch, mesh)
  rng = jax.random.key(0)
  start = time.perf_counter()
  state, metrics = train_step(state, batch, jax.random.fold_in(rng, 0))
  jax.block_until_ready((state, metrics))
  compile_s = time.perf_counter() - start
  times = []
  for i in range(steps):
    start = time.perf_counter()
    state, metrics = train_step(state, batch, jax.random.fold_in(rng, i + 1))
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - start)
  return dict(first_call_s=compile_s, step_s=times, loss=float(metrics["loss"])), state


def time_combined(config, teacher, num_workers, train_step, state, mesh, steps):
  """As train._train_loop: the next batch is fetched while the previous step's metrics are pending."""
  import jax  # pylint: disable=g-import-not-at-top
  from acula_jax import input_pipeline, sharding  # pylint: disable=g-import-not-at-top
  config = config.copy_and_resolve_references()
  config.data.num_workers = num_workers
  iterator = iter(input_pipeline.create_train_dataset(config, teacher))
  rng = jax.random.key(1)
  pending = None
  start = None
  for step in range(steps + 1):  # step 0 (first batch, worker start-up) untimed
    state, metrics = train_step(state, sharding.shard_batch(next(iterator), mesh),
                                jax.random.fold_in(rng, step))
    if pending is not None:
      jax.device_get(pending)
    pending = metrics
    if step == 0:
      jax.block_until_ready((state, metrics))
      start = time.perf_counter()
  jax.block_until_ready((state, pending))
  seconds = time.perf_counter() - start
  _close(iterator)
  return dict(num_workers=num_workers, seconds=seconds, steps=steps,
              examples_per_s=steps * config.batch_size / seconds), state


def report(args, config, results, command) -> str:
  import jax  # pylint: disable=g-import-not-at-top
  batch = config.batch_size
  step = results["step"]
  step_mean = sum(step["step_s"]) / len(step["step_s"])
  step_eps = batch / step_mean
  each = ", ".join(f"{s:.3f}" for s in step["step_s"])
  shapes = results["pipeline"][0]["shapes"]
  seconds = config.data.clip_frames * config.audio.hop / config.audio.sample_rate
  lines = [
      f"machine: {machine()}, Python {platform.python_version()}, jax {jax.__version__}, "
      f"{jax.device_count()} {jax.devices()[0].platform} device(s)",
      f"command: `{command}`",
      f"config: configs/real_data.py:loss={args.loss}, batch {batch}, clip_frames "
      f"{config.data.clip_frames} ({seconds:.2f} s), "
      f"model width {config.model.width} depth {config.model.depth}, {results['num_params'] / 1e6:.2f}M "
      f"params; batch shapes {shapes}; {results['num_examples']} training examples",
      "",
      "| what | num_workers | untimed first | timed | batches/s | examples/s | ratio pipeline / step |",
      "|---|---|---|---|---|---|---|"]
  for p in results["pipeline"]:
    lines.append(
        f"| pipeline alone | {p['num_workers']} | {p['first_batch_s']:.2f} s + {args.warmup} batches | "
        f"{p['batches']} batches, {p['seconds']:.2f} s | {p['batches_per_s']:.2f} | "
        f"{p['examples_per_s']:.1f} | **{p['examples_per_s'] / step_eps:.2f}** |")
  lines.append(
      f"| train step alone (fixed batch) | - | {step['first_call_s']:.1f} s (compile) | "
      f"{len(step['step_s'])} steps, {step_mean:.3f} s/step ({each}) | "
      f"{1 / step_mean:.2f} | {step_eps:.1f} | 1 (reference) |")
  for c in results.get("combined", []):
    lines.append(
        f"| pipeline + step (as train.py) | {c['num_workers']} | 1 step | {c['steps']} steps, "
        f"{c['seconds']:.2f} s | {c['steps'] / c['seconds']:.2f} | {c['examples_per_s']:.1f} | "
        f"{c['examples_per_s'] / step_eps:.2f} (of step alone) |")
  lines += ["", f"last step loss (finiteness check): {step['loss']:.4f}"]
  return "\n".join(lines)


def main(argv=None):
  args = parse_args(argv)
  os.chdir(REPO)
  command = shlex.join([os.path.relpath(sys.executable, REPO) if sys.executable.startswith(str(REPO))
                        else sys.executable, os.path.relpath(__file__, REPO)] + sys.argv[1:])
  from absl import flags  # pylint: disable=g-import-not-at-top
  from acula_jax.data import records  # pylint: disable=g-import-not-at-top
  from acula_jax.data import teacher as teacher_lib  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()  # grain's mp_prefetch reads its absl flags (defaults here)
  config = build_config(args)
  teacher = teacher_lib.TeacherTable(config.data.teacher_dir)
  results = dict(num_examples=len(records.open_split(config.data.records_dir, config.data.train_split)),
                 pipeline=[])
  fixed_batch = None
  for workers in args.workers:
    print(f"[pipeline] num_workers={workers}", file=sys.stderr, flush=True)
    result, first = time_pipeline(config, teacher, workers, args.batches, args.warmup)
    results["pipeline"].append(result)
    fixed_batch = fixed_batch or first
  print("[step] building and compiling", file=sys.stderr, flush=True)
  train_step, state, mesh, results["num_params"] = build_step(config, teacher.dim)
  results["step"], state = time_step(train_step, state, mesh, fixed_batch, args.steps)
  if args.combined_steps:
    results["combined"] = []
    for workers in args.workers:
      print(f"[combined] num_workers={workers}", file=sys.stderr, flush=True)
      result, state = time_combined(config, teacher, workers, train_step, state, mesh,
                                    args.combined_steps)
      results["combined"].append(result)
  print(report(args, config, results, command))
  if args.json:
    print(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
  main()
