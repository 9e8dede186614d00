r"""The paper's AcuLa step on one accelerator: this repo's JAX step and the PyTorch reference, same machine.

  python benchmarks/accelerator_step.py [--batch=48] [--steps=10] [--warmup=2] [--size=paper|tiny]
      [--phase=both|jax|torch] [--peak_tflops=N] [--json=PATH]

A prepared script for a lent GPU (it also runs on CPU: `--size=tiny` is its smoke test). Each framework
runs in its own child process, one after the other, so that each has the accelerator's memory to itself:

  jax:   `configs/acula.py:encoder=opera_gt,loss=reference_gram` as `acula_jax.main` would run it on
         this machine (`train.make_train_step`, the mesh over every local device, model.dtype and
         model.remat "auto": bfloat16 compute and remat "dots" on an accelerator), from waveforms.
  torch: `benchmarks/train_step.py`'s plain-torch formulation of the authors' step (MAE ViT-S, SDPA
         attention, heads, (1 - reference Gram "CKA") + MAE, AdamW, clip 1.0) on the same device, under
         `torch.autocast(bfloat16)` on CUDA, from precomputed log-mels (as the authors' loader gives them).

Reported per framework: examples/s over the timed steps (warm-up steps, JAX's compile among them, are
not timed), MFU = analytic model FLOPs per example (`analytic_flops_per_example`: 3x the forward
matmuls of the full pass, the masked pass and the decoder; 265 GFLOP at the paper's sizes) x
examples/s / the device's bf16 peak (`--peak_tflops`, else `PEAK_TFLOPS` by device name), and peak
device memory (JAX: the device's `peak_bytes_in_use`; torch: `torch.cuda.max_memory_allocated`; on CPU
the process's peak RSS). Prints a markdown table; `--json` also writes the numbers.
"""
import argparse
import json
import pathlib
import resource
import subprocess
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import train_step  # pylint: disable=wrong-import-position  (the PyTorch reference's model and inputs)

_RESULT_TAG = "@@RESULT@@ "
# Dense bf16 peak per device, TFLOP/s (vendor figures without sparsity).
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0}
SIZES = {
    "paper": dict(width=384, depth=12, num_heads=6, decoder_width=256, decoder_depth=4,
                  decoder_heads=8, frames=256, text_dim=384),
    # The reference model's input is OPERA-GT's 256 x 64 log-mel at every size.
    "tiny": dict(width=32, depth=2, num_heads=2, decoder_width=32, decoder_depth=1, decoder_heads=2,
                 frames=256, text_dim=24),
}


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog="\n".join(__doc__.splitlines()[1:]))
  parser.add_argument("--batch", type=int, default=48, help="global batch (paper: 48)")
  parser.add_argument("--steps", type=int, default=10, help="timed steps per framework")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (JAX: compiles)")
  parser.add_argument("--size", choices=sorted(SIZES), default="paper")
  parser.add_argument("--phase", choices=("both", "jax", "torch"), default="both")
  parser.add_argument("--peak_tflops", type=float, default=None,
                      help="the device's bf16 peak; default: PEAK_TFLOPS by device name")
  parser.add_argument("--json", default=None, help="also write the results here")
  return parser.parse_args(argv)


def analytic_flops_per_example(size, mask_ratio=0.7, patch=16, mels=64, mlp_ratio=4.0) -> float:
  """Training FLOPs of one example: 3 x the forward matmuls (weights and attention) of the unmasked
  encoder pass, the masked (MAE) encoder pass and the MAE decoder; heads and patch embedding left out."""
  tokens = size["frames"] * mels // patch + 1
  visible = int((tokens - 1) * (1 - mask_ratio) + 1e-6) + 1

  def forward(n, width, depth):
    weights = 2 * (4 * width * width + 2 * width * int(mlp_ratio * width))
    attention = 2 * 2 * n * width  # q k^T and p v per token
    return n * depth * (weights + attention)

  encoder = forward(tokens, size["width"], size["depth"]) + forward(visible, size["width"], size["depth"])
  return 3.0 * (encoder + forward(tokens, size["decoder_width"], size["decoder_depth"]))


def _peak_rss_bytes():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _timed(step, warmup, steps):
  for _ in range(warmup):
    step()
  start = time.perf_counter()
  for _ in range(steps):
    step()
  return (time.perf_counter() - start) / steps


def run_jax(args) -> dict:
  sys.path.insert(0, str(REPO))
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from acula_jax import sharding, train  # pylint: disable=g-import-not-at-top
  from acula_jax.models import acula  # pylint: disable=g-import-not-at-top
  from configs import acula as acula_config  # pylint: disable=g-import-not-at-top

  size = SIZES[args.size]
  config = acula_config.get_config("encoder=opera_gt,loss=reference_gram")
  config.model.update({k: v for k, v in size.items() if k in config.model})
  config.model.spec_shape, config.data.clip_frames = (size["frames"], 64), size["frames"]
  config.batch_size = args.batch
  mesh = sharding.make_mesh(config.mesh)
  platform = sharding.platform(mesh)
  model, optimizer, _ = train.create_model_and_optimizer(config, size["text_dim"], 10_000, platform)
  graphdef, state = nnx.split((model, optimizer))
  state_sharding = sharding.state_shardings(state, mesh, config.param_sharding)
  state = jax.device_put(state, state_sharding)
  step_fn = train.make_train_step(graphdef, config, state_sharding, sharding.batch_sharding(mesh))
  waves, text = _inputs(args.batch, size)
  batch = sharding.shard_batch({"audio": waves, "text_embedding": text}, mesh)
  holder = {"state": state, "step": 0}

  def step():
    holder["state"], metrics = step_fn(holder["state"], batch, jax.random.key(holder["step"]))
    jax.block_until_ready(metrics)
    holder["step"] += 1

  seconds = _timed(step, max(args.warmup, 1), args.steps)
  stats = jax.local_devices()[0].memory_stats() or {}
  return dict(framework="jax", version=f"jax {jax.__version__}",
              device=jax.local_devices()[0].device_kind, devices=mesh.size,
              dtype=acula.resolve_auto("dtype", config.model.dtype, platform),
              remat=acula.resolve_auto("remat", config.model.remat, platform),
              step_s=seconds, peak_bytes=stats.get("peak_bytes_in_use", _peak_rss_bytes()),
              peak_kind="device" if "peak_bytes_in_use" in stats else "host RSS")


def _inputs(batch, size):
  rng = np.random.default_rng(0)
  waves = (rng.standard_normal((batch, (size["frames"] - 1) * train_step.HOP)) * 0.1).astype(np.float32)
  return waves, rng.standard_normal((batch, size["text_dim"])).astype(np.float32)


def run_torch(args) -> dict:
  import torch  # pylint: disable=g-import-not-at-top
  size = SIZES[args.size]
  device = "cuda" if torch.cuda.is_available() else "cpu"
  torch.manual_seed(0)
  model = train_step.build_torch_model(
      torch, decoder_depth=size["decoder_depth"], text_dim=size["text_dim"], width=size["width"],
      depth=size["depth"], heads=size["num_heads"], decoder_width=size["decoder_width"],
      decoder_heads=size["decoder_heads"]).to(device).train()
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01)
  waves, text = _inputs(args.batch, size)
  spec = np.stack([train_step._librosa_log_mel(w) for w in waves]).astype(np.float32)  # pylint: disable=protected-access
  spec, text = torch.from_numpy(spec).to(device), torch.from_numpy(text).to(device)

  def step():
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
      loss = model(spec, text)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    if device == "cuda":
      torch.cuda.synchronize()

  seconds = _timed(step, args.warmup, args.steps)
  cuda = device == "cuda"
  return dict(framework="torch", version=f"torch {torch.__version__}",
              device=torch.cuda.get_device_name() if cuda else "cpu", devices=1,
              dtype="bfloat16 autocast" if cuda else "float32", remat="none", step_s=seconds,
              peak_bytes=torch.cuda.max_memory_allocated() if cuda else _peak_rss_bytes(),
              peak_kind="device" if cuda else "host RSS")


def _child(args, phase) -> dict:
  argv = [sys.executable, __file__, f"--phase={phase}", f"--batch={args.batch}", f"--steps={args.steps}",
          f"--warmup={args.warmup}", f"--size={args.size}"]
  proc = subprocess.run(argv, cwd=REPO, stdout=subprocess.PIPE, text=True, check=False)
  if proc.returncode:
    raise SystemExit(f"{phase} failed (exit {proc.returncode}); its stderr is above")
  line = [l for l in proc.stdout.splitlines() if l.startswith(_RESULT_TAG)][-1]
  return json.loads(line[len(_RESULT_TAG):])


def _peak_flops(result, flag):
  if flag:
    return flag * 1e12
  return next((tflops * 1e12 for name, tflops in PEAK_TFLOPS.items() if name in result["device"]), None)


def report(args, results) -> str:
  flops = analytic_flops_per_example(SIZES[args.size])
  lines = [f"Size {args.size}, global batch {args.batch}, {args.steps} timed steps after {args.warmup} "
           f"warm-up; analytic model FLOPs {flops / 1e9:.1f} GFLOP per example.", "",
           "| framework | device | compute | examples/s | MFU | peak memory |", "|---|---|---|---|---|---|"]
  for r in results:
    rate = args.batch / r["step_s"]
    peak = _peak_flops(r, args.peak_tflops)
    mfu = f"{100 * flops * rate / (peak * r['devices']):.1f}%" if peak else "– (no peak known)"
    lines.append(f"| {r['version']} | {r['devices']}x {r['device']} | {r['dtype']}, remat {r['remat']} | "
                 f"{rate:.1f} | {mfu} | {r['peak_bytes'] / 2**30:.2f} GiB ({r['peak_kind']}) |")
  return "\n".join(lines)


def main(argv=None):
  args = parse_args(argv)
  if args.phase != "both":
    result = run_jax(args) if args.phase == "jax" else run_torch(args)
    print(_RESULT_TAG + json.dumps(result), flush=True)
    return
  results = [_child(args, "jax"), _child(args, "torch")]
  print(report(args, results))
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
  main()
