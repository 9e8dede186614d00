r"""Log-mel front end: jitted, batched JAX (`acula_jax.audio.frontends.log_mel`) vs librosa on the same batch.

  .venv/bin/python benchmarks/frontend.py [--batch=32] [--seconds=8.16] [--repeats=5]

Prints a markdown row: clips/s of each and their ratio, after a warm-up call of each (JAX compile
excluded), plus the max abs difference of the two outputs as a correctness check.
"""
import argparse
import platform
import time

import jax
import librosa
import numpy as np

from acula_jax.audio import frontends


def librosa_log_mel(wave):
  spec = librosa.feature.melspectrogram(y=wave, sr=16000, n_fft=1024, hop_length=512, n_mels=64,
                                        fmin=50, fmax=8000)
  spec = librosa.power_to_db(spec, ref=np.max)
  return ((spec - spec.min()) / (spec.max() - spec.min())).T


def best_time(fn, repeats):
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--seconds", type=float, default=8.16)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  waves = (np.random.default_rng(0).standard_normal((args.batch, int(args.seconds * 16000)))
           * 0.1).astype(np.float32)

  run_jax = lambda: jax.block_until_ready(frontends.log_mel(waves))
  run_librosa = lambda: [librosa_log_mel(w) for w in waves]
  ours, ref = np.asarray(run_jax()), np.stack(run_librosa())  # warm-up (compile) + outputs
  max_diff = float(np.abs(ours - ref).max())

  jax_s = best_time(run_jax, args.repeats)
  librosa_s = best_time(run_librosa, args.repeats)
  print(f"machine: {platform.processor() or platform.machine()}, {jax.device_count()} "
        f"{jax.devices()[0].platform} device(s), jax {jax.__version__}, librosa {librosa.__version__}")
  print("| batch x seconds | JAX clips/s | librosa clips/s | ratio | max abs diff |")
  print("|---|---|---|---|---|")
  print(f"| {args.batch} x {args.seconds} | {args.batch / jax_s:.0f} | {args.batch / librosa_s:.0f} | "
        f"{librosa_s / jax_s:.2f}x | {max_diff:.1e} |")


if __name__ == "__main__":
  main()
