r"""Recordings/s of `acula_jax.data.prepare` on the real PhysioNet 2016 copy, per worker count and pool kind.

  .venv/bin/python benchmarks/prepare_throughput.py --data_dir=../shared/data/physionet2016 \
      --databases=a --workers=1,2 --pools=process,thread

Each configuration prepares the same recordings (decode, resample 2 kHz -> 16 kHz with soxr_hq, write
ArrayRecord shards) into a fresh temporary directory, after one untimed warm-up on a few files (so
librosa's first-call cost is not charged to the first configuration). Worker start-up (spawned
processes import numpy/JAX/librosa) is part of the timed run, as it is for a user. Prints one markdown
row per configuration: machine, command, recordings, audio hours, seconds, recordings/s, audio s/s.
"""
import argparse
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from acula_jax.data import prepare  # pylint: disable=g-import-not-at-top,wrong-import-position

from machine_info import machine  # benchmarks/, on sys.path when run as a script


def run_once(data_dir, options, workers, pool, num_shards):
  """(seconds, manifest) of one prepare run into a temporary directory (deleted afterwards)."""
  out = tempfile.mkdtemp(prefix="prepare-bench-")
  try:
    start = time.perf_counter()
    manifest = prepare.prepare("physionet2016", data_dir, out, options=options, num_shards=num_shards,
                               workers=workers, pool=pool, progress=False)
    return time.perf_counter() - start, manifest, _audio_seconds(out, manifest)
  finally:
    shutil.rmtree(out, ignore_errors=True)


def _audio_seconds(out, manifest) -> float:
  """Total stored audio (s), from the records themselves."""
  from acula_jax.data import records  # pylint: disable=g-import-not-at-top
  total = 0
  for split in manifest["counts"]:
    source = records.AudioRecordSource(out, split)
    total += sum(source[i]["num_samples"] for i in range(len(source)))
  return total / 16000


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data_dir", default=os.path.join(REPO, "..", "shared", "data", "physionet2016"))
  parser.add_argument("--databases", default="a", help="PhysioNet subsets, e.g. a or abcdef ('' = all).")
  parser.add_argument("--workers", default="1,2")
  parser.add_argument("--pools", default="process,thread")
  parser.add_argument("--num_shards", type=int, default=4)
  args = parser.parse_args()
  options = {"databases": args.databases} if args.databases else {}
  run_once(args.data_dir, {**options, "limit": "4"}, 1, "thread", 1)  # warm-up
  print("| machine | command | recordings | audio h | s | recordings/s | audio s/s |")
  print("|---|---|---|---|---|---|---|")
  for workers in map(int, args.workers.split(",")):
    for pool in args.pools.split(",") if workers > 1 else ["-"]:
      seconds, manifest, audio_s = run_once(args.data_dir, options, workers,
                                            pool if workers > 1 else "thread", args.num_shards)
      flags = " ".join(f"--option={k}={v}" for k, v in options.items())
      command = (f"python -m acula_jax.data.prepare --dataset=physionet2016 {flags} --workers={workers}"
                 + (f" --pool={pool}" if workers > 1 else ""))
      n = manifest["num_examples"]
      print(f"| {machine()} | `{command}` | {n} | {audio_s / 3600:.2f} | {seconds:.1f} | {n / seconds:.1f} "
            f"| {audio_s / seconds:.0f} |", flush=True)
  load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
  print(f"\n(python {platform.python_version()}, load average {load} at the end: other processes share "
        f"these cores; argv: {shlex.join(sys.argv)})")


if __name__ == "__main__":
  main()
