r"""Attention forward + backward on CPU: the blocked kernel vs XLA's vs PyTorch's fused SDPA, same run.

  .venv/bin/python benchmarks/attention.py [--batch=8] [--rounds=5] [--threads=N]

Shapes are OPERA-GT's: the encoder's full pass (1025 tokens, 6 heads x 64) and the MAE decoder (1025
tokens, 8 heads x 32). Each case runs `acula_jax.models.attention.dot_product_attention` with
implementation="blocked" (what the models use on CPU), `jax.nn.dot_product_attention` (XLA's) and
`torch.nn.functional.scaled_dot_product_attention` (PyTorch's CPU flash attention), in one process and in
turns, round after round (shared VMs drift in speed); medians are reported. Also prints the XLA temp
memory of the two JAX versions (compiled memory analysis).
"""
import argparse
import os
import sys
import time

import numpy as np

SHAPES = {"encoder (1025 tokens, 6 x 64)": (1025, 6, 64), "decoder (1025 tokens, 8 x 32)": (1025, 8, 32)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
  args = parser.parse_args()
  os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.threads])
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
  import jax
  import jax.numpy as jnp
  import torch

  from acula_jax.models import attention
  from machine_info import machine  # benchmarks/, on sys.path when run as a script
  torch.set_num_threads(args.threads)

  print(f"machine: {machine()}, {args.threads} threads; jax {jax.__version__}, "
        f"torch {torch.__version__}")
  print(f"command: `{' '.join([os.path.relpath(sys.executable), *sys.argv])}`\n")
  print("| shape | batch | blocked (JAX) ms | XLA (jax.nn) ms | torch SDPA ms | blocked / torch time "
        "| XLA / torch time | XLA temp MiB: blocked / jax.nn |")
  print("|---|---|---|---|---|---|---|---|")
  for label, (n, heads, dim) in SHAPES.items():
    shape = (args.batch, n, heads, dim)
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(shape).astype(np.float32) for _ in range(4)]
    q, k, v, weights = map(jnp.asarray, arrays)

    def jax_grads(implementation):
      loss = lambda q, k, v: jnp.sum(
          attention.dot_product_attention(q, k, v, implementation=implementation) * weights)
      return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))

    jitted = {name: jax_grads(name) for name in ("blocked", "xla")}
    temp_mib = {name: fn.lower(q, k, v).compile().memory_analysis().temp_size_in_bytes / 2**20
                for name, fn in jitted.items()}
    heads_first = lambda a: torch.from_numpy(a).transpose(1, 2).contiguous()
    tq, tk, tv = (heads_first(a).requires_grad_() for a in arrays[:3])
    tw = heads_first(arrays[3])

    def torch_step():
      out = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv)
      (out * tw).sum().backward()

    runs = {name: (lambda fn: lambda: jax.block_until_ready(fn(q, k, v)))(fn)
            for name, fn in jitted.items()}
    runs["torch"] = torch_step
    for run in runs.values():  # compile / warm up
      run()
      run()
    times = {name: [] for name in runs}
    for _ in range(args.rounds):
      for name, run in runs.items():
        start = time.perf_counter()
        run()
        times[name].append(time.perf_counter() - start)
    median = {name: float(np.median(t)) for name, t in times.items()}
    print(f"| {label} | {args.batch} | {1e3 * median['blocked']:.0f} | {1e3 * median['xla']:.0f} | "
          f"{1e3 * median['torch']:.0f} | {median['blocked'] / median['torch']:.2f} | "
          f"{median['xla'] / median['torch']:.2f} | {temp_mib['blocked']:.0f} / {temp_mib['xla']:.0f} |",
          flush=True)


if __name__ == "__main__":
  main()
