"""Teacher tables for tests, written as the teacher job writes them (its shards and manifest)."""
import os
from typing import Sequence

import numpy as np

from acula_jax import errors
from acula_jax import fileio
from acula_jax.data import records


def write_teacher_shards(out_dir, rows: Sequence[tuple], num_shards: int, *,
                         metadata: dict | None = None) -> dict:
  """Writes (id, embedding, report) rows, sorted by id, as contiguous shards plus manifest.json.

  The manifest holds `metadata` plus dim, count and shards [{file, count, sha256}]; returns it.
  """
  rows = sorted(rows, key=lambda row: row[0])
  if not rows:
    raise errors.DataError(out_dir, "no teacher rows to write")
  records._check_unique([row[0] for row in rows], out_dir)
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  bounds = records.shard_bounds(len(rows), num_shards)
  shards = [records.write_teacher_shard(out_dir, rows[a:b], i, len(bounds)) for i, (a, b) in enumerate(bounds)]
  manifest = {**(metadata or {}), "dim": int(np.asarray(rows[0][1]).shape[0]), "count": len(rows),
              "shards": shards}
  fileio.write_json_atomic(os.path.join(out_dir, records.MANIFEST), manifest)
  return manifest
