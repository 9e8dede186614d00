r"""Host memory of the teacher join: lookups from the shards (`data.teacher.TeacherTable`) vs the whole table in RAM.

  .venv/bin/python benchmarks/teacher_memory.py [--sizes=10000,1000000] [--dim=256] [--lookups=20000] \
      [--workdir=workdir/teacher_memory] [--json]

For each size it writes (once, kept in --workdir) a synthetic teacher folder with the teacher job's own
writer (`teacher.write_shard`, `teacher.write_index`; 8 shards, random float32 rows), then measures,
each in a fresh interpreter:

* lookup: the trainer's way. Open the table, check every id of the table with `missing` (as training
  does before step 0; here in chunks of 65536 ids, as the split's id list is the audio side's), then `--lookups` embeddings of a shuffled Grain `MapDataset` in batches of 48.
* eager (the reference): every row read into one float32 [n, dim] array plus an id -> row dict, which
  is what the trainer did before the lookup existed; then the same lookups from that array.

Reported: peak RSS (VmHWM) above the interpreter's RSS after its imports, the RSS at the end and its
anonymous part (RssAnon: without the mapped index's file pages), and lookups per second.
The lookup's memory does not depend on `--dim` (it holds the index, 24 bytes a row, and the rows read);
the eager table's grows with n * dim * 4 bytes (10 GB per host for 1M MedGemma-4B embeddings).
"""
import argparse
import json
import pathlib
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # pylint: disable=g-import-not-at-top

ID_FORMAT = "synthetic/rec{:08d}"
NUM_SHARDS = 8
BATCH = 48


def _status_mb(field: str) -> float:
  """VmRSS (now), VmHWM (peak; unlike ru_maxrss it starts afresh at exec) or RssAnon (now, without
  file pages such as the mapped index, which the kernel can drop and worker processes share)."""
  with open("/proc/self/status") as f:
    line = next(l for l in f if l.startswith(field + ":"))
  return int(line.split()[1]) / 1024


def build_table(directory: pathlib.Path, size: int, dim: int) -> bool:
  """A teacher folder of `size` random rows, written as the teacher job writes one; False if kept."""
  from acula_jax import fileio  # pylint: disable=g-import-not-at-top
  from acula_jax.data import records, teacher  # pylint: disable=g-import-not-at-top
  if (directory / records.MANIFEST).exists():
    return False
  directory.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(0)
  shards = []
  bounds = teacher.shard_bounds(size, NUM_SHARDS)
  for i, (a, b) in enumerate(bounds):
    rows = [(ID_FORMAT.format(r), rng.standard_normal(dim, dtype=np.float32), "r") for r in range(a, b)]
    shards.append(teacher.write_shard(directory, rows, i, len(bounds)))
  manifest = {"model": "synthetic", "dim": dim, "count": size, "shards": shards,
              "index": teacher.write_index(directory, shards)}
  fileio.write_json_atomic(directory / records.MANIFEST, manifest)
  return True


def measure(directory: str, mode: str, lookups: int) -> dict:
  """Runs in a fresh interpreter (see main): one mode on one table."""
  import grain  # pylint: disable=g-import-not-at-top
  from acula_jax.data import teacher  # pylint: disable=g-import-not-at-top
  base, base_anon = _status_mb("VmRSS"), _status_mb("RssAnon")
  table = teacher.TeacherTable(directory)
  size = len(table)
  if mode == "lookup":
    for start in range(0, size, 65536):  # in chunks: the split's id list belongs to the audio side
      if table.missing([ID_FORMAT.format(r) for r in range(start, min(size, start + 65536))]):
        raise AssertionError("ids missing from the table")
    get = table.lookup
  else:
    rows = list(table.rows())
    embeddings = np.stack([row["embedding"] for row in rows])
    index = {row["id"]: i for i, row in enumerate(rows)}
    del rows
    get = lambda example_id: embeddings[index[example_id]]
  dataset = (grain.MapDataset.range(size).seed(0).shuffle()
             .map(lambda r: get(ID_FORMAT.format(r))).batch(BATCH))
  started = time.perf_counter()
  for batch in range(lookups // BATCH):
    dataset[batch]
  seconds = time.perf_counter() - started
  peak = _status_mb("VmHWM")
  return {"mode": mode, "rows": size, "dim": table.dim, "peak_rss_mb_above_imports": round(peak - base, 1),
          "rss_mb_after": round(_status_mb("VmRSS") - base, 1),
          "anon_rss_mb_after": round(_status_mb("RssAnon") - base_anon, 1), "lookups_per_s": round(lookups // BATCH * BATCH / seconds)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", default="10000,1000000")
  parser.add_argument("--dim", type=int, default=256)
  parser.add_argument("--lookups", type=int, default=20000)
  parser.add_argument("--workdir", default=str(REPO / "workdir" / "teacher_memory"))
  parser.add_argument("--modes", default="lookup,eager")
  parser.add_argument("--json", action="store_true")
  parser.add_argument("--measure", nargs=2, metavar=("DIR", "MODE"), help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.measure:
    print(json.dumps(measure(args.measure[0], args.measure[1], args.lookups)))
    return
  results = []
  for size in (int(s) for s in args.sizes.split(",")):
    directory = pathlib.Path(args.workdir) / f"n{size}_d{args.dim}"
    started = time.perf_counter()
    written = build_table(directory, size, args.dim)
    print(f"table n={size} d={args.dim}: " + (f"written in {time.perf_counter() - started:.0f} s" if written
                                              else f"kept from an earlier run in {directory}"), file=sys.stderr)
    for mode in args.modes.split(","):
      out = subprocess.run([sys.executable, __file__, "--measure", str(directory), mode,
                            f"--lookups={args.lookups}"], capture_output=True, text=True, check=True)
      results.append(json.loads(out.stdout))
      print(results[-1], file=sys.stderr)
  if args.json:
    print(json.dumps(results, indent=1))
    return
  print("| rows | dim | join | peak RSS above imports (MB) | RSS after (MB) | of it anonymous (MB) | lookups/s |\n"
        "|---|---|---|---|---|---|---|")
  for r in results:
    print(f"| {r['rows']:,} | {r['dim']} | {r['mode']} | {r['peak_rss_mb_above_imports']} | {r['rss_mb_after']} | "
          f"{r['anon_rss_mb_after']} | {r['lookups_per_s']:,} |")


if __name__ == "__main__":
  main()
