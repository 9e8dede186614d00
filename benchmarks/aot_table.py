r"""BENCHMARKS.md § "Compiled for TPU": the paper configs compiled for Cloud TPU slices, from this machine.

  .venv/bin/python benchmarks/aot_table.py [--encoders=opera_gt,opera_ct,audiomae]
      [--accelerators=v5litepod-8,v4-8,v6e-8,v5p-128] [--out=workdir/aot_table] [--no_max_batch]

For each encoder and slice: `python -m acula_jax.tools.aot --config=configs/acula.py:encoder=E
--accelerator_type=A --config.batch_size=B --json=...` in a child process (libtpu is held by one process
at a time), at the paper's global batch 48 (rounded up to a multiple of the slice's devices) and at the
largest batch that fits: per-device memory is linear in the batch, so two compiles give the line, the
batch it predicts for the chip's HBM is compiled to confirm (stepping down by one device-multiple while
it does not fit). Prints a markdown table whose every row names its command; the JSON reports stay in
--out.
"""
import argparse
import json
import math
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from acula_jax.tools import accelerators  # pylint: disable=wrong-import-position

PAPER_BATCH = 48


def command(encoder, accelerator, batch, json_path=None) -> list:
  cmd = [sys.executable, "-m", "acula_jax.tools.aot", f"--config=configs/acula.py:encoder={encoder}",
         f"--accelerator_type={accelerator}", f"--config.batch_size={batch}"]
  return cmd + ([f"--json={json_path}"] if json_path else [])


def compile_once(encoder, accelerator, batch, out_dir) -> dict:
  path = pathlib.Path(out_dir) / f"{encoder}_{accelerator}_b{batch}.json"
  if not path.exists():
    proc = subprocess.run(command(encoder, accelerator, batch, path), cwd=REPO, capture_output=True,
                          text=True, check=False, env=dict(os.environ, PYTHONPATH=str(REPO)))
    if proc.returncode not in (0, 1) or not path.exists():
      raise RuntimeError(f"aot failed for {encoder} {accelerator} batch {batch}:\n{proc.stderr[-3000:]}")
  return json.loads(path.read_text())


def largest_fitting_batch(encoder, accelerator, first, out_dir) -> dict:
  """The report at the largest multiple of the device count that fits (memory is linear in batch)."""
  devices = accelerators.parse(accelerator).devices
  hbm = first["hbm_bytes_per_device"]
  second = compile_once(encoder, accelerator, 2 * first["batch_size"], out_dir)
  (b0, m0), (b1, m1) = ((r["batch_size"], r["needed_bytes_per_device"]) for r in (first, second))
  per_example = (m1 - m0) / (b1 - b0)
  batch = max(devices, int((hbm - (m0 - per_example * b0)) / per_example) // devices * devices)
  report = compile_once(encoder, accelerator, batch, out_dir)
  while not report["fits"] and batch > devices:
    batch -= devices
    report = compile_once(encoder, accelerator, batch, out_dir)
  while True:  # the line may under-predict: step up while the next multiple still fits
    bigger = compile_once(encoder, accelerator, batch + devices, out_dir)
    if not bigger["fits"]:
      return report
    batch, report = batch + devices, bigger


def _bytes(n):
  for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
    if n >= size:
      return f"{n / size:.3g} {unit}"
  return f"{n:.0f} B"


def row(report, encoder) -> str:
  cmd = " ".join(command(encoder, report["accelerator"], report["batch_size"])[1:])
  need = f"{report['needed_bytes_per_device'] / 2**30:.2f} / {report['hbm_bytes_per_device'] / 2**30:.0f}"
  if "memory_per_device" not in report:
    return (f"| {encoder} | {report['accelerator']} | {report['batch_size']} | {need} | no | – | – | – | "
            f"– | `python {cmd}` |")
  c = report["collectives"]
  collectives = ", ".join(f"{k} {v['count']}x, {_bytes(v['bytes'])}" for k, v in c.items() if v["count"]) or "none"
  r = report["roofline"]
  return (f"| {encoder} | {report['accelerator']} | {report['batch_size']} | {need} | "
          f"{'yes' if report['fits'] else 'no'} | {report['matmul_flops_per_example'] / 1e9:.0f} | {collectives} | "
          f"{r['step_s_lower_bound'] * 1e3:.0f} ms ({r['bound_by']}), {r['examples_per_s_upper_bound']:.0f} ex/s, "
          f"MFU ≤ {100 * r['mfu_upper_bound']:.0f}% | {report['compile_s']:.0f} s | `python {cmd}` |")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--encoders", default="opera_gt,opera_ct,audiomae")
  parser.add_argument("--accelerators", default="v5litepod-8,v4-8,v6e-8,v5p-128")
  parser.add_argument("--out", default="workdir/aot_table")
  parser.add_argument("--no_max_batch", action="store_true", help="only the paper's batch")
  args = parser.parse_args()
  out_dir = REPO / args.out
  out_dir.mkdir(parents=True, exist_ok=True)
  print("| encoder | slice | global batch | GiB needed / HBM per device | fits | GFLOP / example | "
        "collectives per step and device (count, bytes) | roofline bound per step | compile | command |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  for encoder in args.encoders.split(","):
    for accelerator in args.accelerators.split(","):
      devices = accelerators.parse(accelerator).devices
      paper = compile_once(encoder, accelerator, math.ceil(PAPER_BATCH / devices) * devices, out_dir)
      print(row(paper, encoder), flush=True)
      if not args.no_max_batch and paper["fits"]:
        print(row(largest_fitting_batch(encoder, accelerator, paper, out_dir), encoder), flush=True)


if __name__ == "__main__":
  main()
