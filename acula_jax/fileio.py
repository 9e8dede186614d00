"""Files written so that readers never see half of one: write to a temporary sibling, sync, rename.

Every writer of the project goes through these (or through Orbax, which does the same for
checkpoints), so an interrupted job leaves the previous file or none, never a truncated one.
"""
import contextlib
import hashlib
import json
import os
import uuid

import numpy as np


def sha256_file(path, chunk_size=1 << 20) -> str:
  """Hex sha256 of a file's bytes."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(chunk_size):
      digest.update(chunk)
  return digest.hexdigest()


def _tmp_name(path) -> str:
  """A sibling temporary name, so os.replace stays on one filesystem (and is atomic)."""
  path = os.fspath(path)
  head, tail = os.path.split(path)
  return os.path.join(head, f".{tail}.tmp-{uuid.uuid4().hex[:8]}")


def write_json_atomic(path, obj) -> None:
  """Writes JSON to a temporary sibling and renames it, so readers never see half a file."""
  write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=json_default) + "\n")


def write_text_atomic(path, text: str) -> None:
  """Writes text to a temporary sibling, syncs it and renames it over `path`; no partial file on failure."""
  with atomic_output(path) as f:
    f.write(text)


@contextlib.contextmanager
def atomic_output(path, mode: str = "w"):
  """A file opened on a temporary sibling of `path`, synced and renamed over it when the block ends
  without an error; on an error the temporary file is removed and `path` keeps what it had."""
  with atomic_path(path) as tmp:
    with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path):
  """A temporary sibling path for a library writer that takes a path; it is synced and renamed over
  `path` when the block ends without an error (check the file inside the block), else removed."""
  tmp = _tmp_name(path)
  try:
    yield tmp
    with open(tmp, "rb") as f:
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def json_default(value):
  """Lets numpy scalars and arrays through json.dump (labels often come out of numpy)."""
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  raise TypeError(f"{type(value).__name__} is not JSON serialisable")
