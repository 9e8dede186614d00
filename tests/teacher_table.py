"""Teacher tables for tests, written as the teacher job writes them (shards, index, manifest)."""
import os
from typing import Sequence

import numpy as np

from acula_jax import errors
from acula_jax import fileio
from acula_jax.data import records
from acula_jax.data import teacher


def write_teacher_shards(out_dir, rows: Sequence[tuple], num_shards: int, *,
                         metadata: dict | None = None) -> dict:
  """Writes (id, embedding, report) rows, sorted by id, as contiguous shards, the index and manifest.json.

  The manifest holds `metadata` plus dim, count, shards and index; returns it.
  """
  rows = sorted(rows, key=lambda row: row[0])
  if not rows:
    raise errors.DataError(out_dir, "no teacher rows to write")
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  bounds = teacher.shard_bounds(len(rows), num_shards)
  shards = [teacher.write_shard(out_dir, rows[a:b], i, len(bounds)) for i, (a, b) in enumerate(bounds)]
  manifest = {**(metadata or {}), "dim": int(np.asarray(rows[0][1]).shape[0]), "count": len(rows),
              "shards": shards, "index": teacher.write_index(out_dir, shards)}
  fileio.write_json_atomic(os.path.join(out_dir, records.MANIFEST), manifest)
  return manifest


def read_teacher(directory) -> tuple[list[str], np.ndarray, dict]:
  """(ids, float32 [n, dim], manifest) of a whole teacher folder, in shard order (tests compare all rows)."""
  table = teacher.TeacherTable(directory)
  rows = list(table.rows())
  return [row["id"] for row in rows], np.stack([row["embedding"] for row in rows]), table.manifest
