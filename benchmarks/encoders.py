r"""Forward+backward throughput of the four encoders on CPU: JAX vs the PyTorch reference, same run.

  .venv/bin/python benchmarks/encoders.py [--batch=32] [--micro_batch=8] [--steps=1] [--warmup=1]
      [--encoders=opera_ce,opera_ct,opera_gt,audiomae] [--threads=N] [--json=FILE]

Every encoder at full size with random weights, one training-mode pass: features(spec, train=True)
(BatchNorm on batch statistics; no dropout or drop-path on either side), loss = mean(features^2),
gradients of every encoder parameter, no optimizer. Inputs: [B, 256, 64] log-mels for OPERA-GT/CE/CT
(CT stretches them to 1024 frames, as HTS-AT does), [B, 1024, 128] fbanks for AudioMAE.

  JAX:   the acula_jax models (`nnx.jit(nnx.value_and_grad(...))`), parameters initialised by
         `convert.initialize`.
  torch: the references of tests/test_encoders.py: a plain-torch MAE ViT (timm block layout,
         F.scaled_dot_product_attention) for OPERA-GT and AudioMAE, the efficientnet_pytorch port
         for OPERA-CE, transformers' ClapAudioModel (eager attention) for OPERA-CT.

A step of `--batch` examples runs as `--batch / --micro_batch` sequential micro-batches whose
gradients are summed (the full-size ViTs need several GiB per example for activations at 1024
tokens), identically on both sides. `--warmup` untimed micro-batches come first (JAX compiles
there); the timed part is `--steps` whole steps. Parameters: the encoder's own (no MAE decoder, no
COLA head). FLOPs per example: XLA's cost analysis of the compiled JAX forward and forward+backward
(eval-mode BatchNorm) at the micro-batch size, divided by it.
"""
import argparse
import importlib.util
import json
import os
import pathlib
import platform
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
ENCODERS = ("opera_ce", "opera_ct", "opera_gt", "audiomae")
SHAPES = {"opera_gt": (256, 64), "opera_ce": (256, 64), "opera_ct": (256, 64), "audiomae": (1024, 128)}
_NOT_ENCODER = ("decoder", "mask_token", "cola_head")


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--micro_batch", type=int, default=8)
  parser.add_argument("--steps", type=int, default=1, help="timed steps of --batch examples")
  parser.add_argument("--warmup", type=int, default=1, help="untimed micro-batches first")
  parser.add_argument("--encoders", default=",".join(ENCODERS))
  parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
  parser.add_argument("--json", default="", help="also write the results to this file")
  args = parser.parse_args(argv)
  if args.batch % args.micro_batch:
    parser.error("--batch must be a multiple of --micro_batch")
  return args


def _references():
  """tests/test_encoders.py as a module (its PyTorch references)."""
  if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))  # it imports tests/timm_side.py
  spec = importlib.util.spec_from_file_location("encoder_refs", REPO / "tests" / "test_encoders.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


# ----------------------------------------------------------------------------
# JAX.


def jax_model(name):
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from acula_jax.tools import convert  # pylint: disable=g-import-not-at-top
  from acula_jax.models import audiomae, opera_ce, opera_ct, opera_gt  # pylint: disable=g-import-not-at-top
  builders = {"opera_gt": opera_gt.opera_gt, "opera_ce": opera_ce.opera_ce,
              "opera_ct": opera_ct.opera_ct, "audiomae": audiomae.audiomae}
  return convert.initialize(nnx.eval_shape(builders[name]), seed=0)


def encoder_params(model):
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  leaves = jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param))
  return sum(x.size for p, x in leaves if not any(s in jax.tree_util.keystr(p) for s in _NOT_ENCODER))


def jax_flops(model, micro_batch, shape):
  """(forward, forward+backward) FLOPs per example from XLA's cost analysis."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  x = jax.ShapeDtypeStruct((micro_batch, *shape), jnp.float32)
  fwd = lambda p, r, s: jnp.mean(nnx.merge(graphdef, p, r).features(s) ** 2)

  def flops(fn):
    cost = jax.jit(fn).lower(params, rest, x).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan"))) / micro_batch

  return flops(fwd), flops(jax.grad(fwd))


def run_jax(name, args, spec):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  model = jax_model(name)

  @nnx.jit
  def grads(model, x):
    loss_fn = lambda m: jnp.mean(m.features(x, train=True) ** 2)
    return nnx.value_and_grad(loss_fn)(model)

  micro = [jnp.asarray(spec[i:i + args.micro_batch]) for i in range(0, args.batch, args.micro_batch)]
  t0 = time.perf_counter()
  for i in range(args.warmup):
    jax.block_until_ready(grads(model, micro[i % len(micro)]))
  warmup_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(args.steps):
    total = None
    for x in micro:
      _, g = grads(model, x)
      total = g if total is None else jax.tree.map(jnp.add, total, g)
    jax.block_until_ready(total)
  step_s = (time.perf_counter() - t0) / args.steps
  fwd, fwd_bwd = jax_flops(model, args.micro_batch, SHAPES[name])
  return dict(step_s=step_s, warmup_s=warmup_s, params=encoder_params(model),
              flops_fwd=fwd, flops_fwd_bwd=fwd_bwd)


# ----------------------------------------------------------------------------
# PyTorch.


def torch_model(name, refs):
  from acula_jax.models import audiomae, opera_ce, opera_gt  # pylint: disable=g-import-not-at-top
  torch = refs.torch
  torch.manual_seed(0)
  refs.TorchAttention.sdpa = True
  if name == "opera_gt":
    c = opera_gt.CONFIG
    model = refs.TorchMAE((256, 64), 4, c["width"], c["depth"], c["num_heads"], 256, 0, 8,
                          refs._gt_positions)  # pylint: disable=protected-access
    return model, model.forward_feature
  if name == "audiomae":
    c = audiomae.CONFIG
    model = refs.TorchMAE((1024, 128), 16, c["width"], c["depth"], c["num_heads"], 512, 0, 16,
                          lambda d, g: refs.mae_flexible_pos_embed(d, (g[1], g[0]), True), fc_norm=True)
    return model, model.forward_feature
  if name == "opera_ce":
    c = opera_ce.CONFIG
    model = refs.TorchColaCE(c["blocks"], c["stem_width"], c["head_width"])
    return model, model.features
  model = refs.clap_audio_model(tiny=False)
  return model, lambda x: model(input_features=x[:, None]).pooler_output


def run_torch(name, args, spec, refs):
  torch = refs.torch
  torch.set_num_threads(args.threads)
  model, features = torch_model(name, refs)
  model.train()
  params = [p for n, p in model.named_parameters()
            if p.requires_grad and not n.startswith(("decoder", "mask_token", "g.", "layer_norm.", "linear."))]
  micro = [torch.from_numpy(spec[i:i + args.micro_batch]) for i in range(0, args.batch, args.micro_batch)]

  def micro_step(x):
    loss = (features(x) ** 2).mean()
    loss.backward()

  t0 = time.perf_counter()
  for i in range(args.warmup):
    micro_step(micro[i % len(micro)])
  warmup_s = time.perf_counter() - t0
  model.zero_grad(set_to_none=True)
  t0 = time.perf_counter()
  for _ in range(args.steps):
    for x in micro:
      micro_step(x)  # gradients accumulate in .grad, as the JAX side sums them
    model.zero_grad(set_to_none=True)
  step_s = (time.perf_counter() - t0) / args.steps
  return dict(step_s=step_s, warmup_s=warmup_s, params=sum(p.numel() for p in params))


# ----------------------------------------------------------------------------


def main(argv=None):
  args = parse_args(argv)
  os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.threads])
  sys.path.insert(0, str(REPO))
  refs = _references()
  results = []
  for name in args.encoders.split(","):
    spec = np.random.default_rng(0).uniform(size=(args.batch, *SHAPES[name])).astype(np.float32)
    j = run_jax(name, args, spec)
    t = run_torch(name, args, spec, refs)
    results.append(dict(encoder=name, jax=j, torch=t))
    print(f"{name}: jax {args.batch / j['step_s']:.2f} ex/s, torch {args.batch / t['step_s']:.2f} ex/s",
          file=sys.stderr, flush=True)
  print(f"\nCPU: {platform.processor() or platform.machine()}, {args.threads} threads, "
        f"load average {os.getloadavg()[0]:.1f}; batch {args.batch} in micro-batches of "
        f"{args.micro_batch}, {args.steps} timed step(s)\n")
  print("| encoder | params (encoder) | GFLOPs/ex fwd | GFLOPs/ex fwd+bwd | JAX ex/s | torch ex/s "
        "| JAX / torch | JAX warm-up s |")
  print("|---|---|---|---|---|---|---|---|")
  for r in results:
    j, t = r["jax"], r["torch"]
    print(f"| {r['encoder']} | {j['params'] / 1e6:.2f} M | {j['flops_fwd'] / 1e9:.2f} | "
          f"{j['flops_fwd_bwd'] / 1e9:.2f} | {args.batch / j['step_s']:.2f} | "
          f"{args.batch / t['step_s']:.2f} | {t['step_s'] / j['step_s']:.2f}x | {j['warmup_s']:.0f} |")
    if j["params"] != t["params"]:
      print(f"(note: {r['encoder']} torch reference has {t['params']} parameters)")
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(dict(args=vars(args), results=results), indent=2))


if __name__ == "__main__":
  main()
