r"""OPERA-GT train step with `models/layers.py`'s GELU/LayerNorm vs autodiff's, compiled in one process.

  .venv/bin/python benchmarks/layers_ab.py [--batch=8] [--rounds=4]

Three variants of the full step (`train_step.build_jax_step`, what benchmarks/train_step.py times):
"autodiff" (`jax.nn.gelu(approximate=False)` and `nnx.LayerNorm`, what the models used before
`layers.py`), "GELU only" (the hand-written GELU backward, autodiff LayerNorm) and "GELU + LayerNorm"
(what the models use now). The old functions are patched in while each variant is traced; all three
are compiled first and then run in turns, the order reversed every round (this VM's speed drifts), and
the medians are reported with each executable's XLA temporary memory and first loss (the same model, so
the losses must agree).
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--rounds", type=int, default=4)
  args = parser.parse_args()

  import jax
  from flax import nnx

  from acula_jax.models import layers
  from machine_info import machine  # benchmarks/, on sys.path when run as a script
  import train_step  # benchmarks/train_step.py: the same step and inputs

  step_args = train_step.parse_args([f"--batch={args.batch}", "--loss=reference_gram"])

  ours = (layers.gelu, layers.LayerNorm.__call__)
  autodiff_gelu = lambda x: jax.nn.gelu(x, approximate=False)
  autodiff_norm = lambda self, x, *, mask=None: nnx.LayerNorm.__call__(self, x, mask=mask)
  variants = {"autodiff": (autodiff_gelu, autodiff_norm), "GELU only": (ours[0], autodiff_norm),
              "GELU + LayerNorm (now)": ours}
  runs, report = {}, {}
  try:
    for name, (gelu, norm_call) in variants.items():
      layers.gelu, layers.LayerNorm.__call__ = gelu, norm_call
      _, _, state, step, batch = train_step.build_jax_step(step_args)
      compiled = step.lower(state, batch, jax.random.key(0)).compile()
      state, metrics = compiled(state, batch, jax.random.key(0))
      jax.block_until_ready(state)
      report[name] = (float(metrics["loss"]), compiled.memory_analysis().temp_size_in_bytes / 2**30)
      runs[name] = [compiled, state]
  finally:
    layers.gelu, layers.LayerNorm.__call__ = ours

  names = list(variants)
  times = {name: [] for name in names}
  for round_index in range(args.rounds):
    for name in names if round_index % 2 == 0 else names[::-1]:
      compiled, state = runs[name]
      start = time.perf_counter()
      state, _ = compiled(state, batch, jax.random.key(round_index + 1))
      jax.block_until_ready(state)
      times[name].append(time.perf_counter() - start)
      runs[name][1] = state

  print(f"machine: {machine()}; jax {jax.__version__}")
  print(f"command: `{' '.join([os.path.relpath(sys.executable), *sys.argv])}`\n")
  print("| GELU / LayerNorm backward | s/step (median) | all rounds | vs autodiff | XLA temp GiB | first loss |")
  print("|---|---|---|---|---|---|")
  base = float(np.median(times["autodiff"]))
  for name in names:
    median = float(np.median(times[name]))
    loss, temp = report[name]
    print(f"| {name} | {median:.2f} | {' '.join(f'{t:.2f}' for t in times[name])} | "
          f"{base / median:.2f}x | {temp:.2f} | {loss:.6f} |")


if __name__ == "__main__":
  main()
