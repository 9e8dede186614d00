"""What every dataset adapter shares: the example spec, skipped entries and seeded subject-wise splits."""
import dataclasses
import hashlib
import os
import re

import numpy as np

SPLITS = ("train", "valid", "test")


@dataclasses.dataclass
class ExampleSpec:
  """One recording to ingest: where its audio is and everything known about it."""
  id: str                   # unique within the dataset
  path: str                 # audio file, absolute or relative to data_dir
  subject_id: str           # "" when the dataset has no subject ids (then the id stands in)
  split: str                # train / valid / test
  labels: dict              # label name -> value (already mapped by the adapter's LABEL_MAPS)
  metadata: dict            # every other published field, for the reports
  start_s: float = 0.0      # segment start within the file (per-cycle datasets), seconds
  end_s: float | None = None


@dataclasses.dataclass
class Skipped:
  where: str                # a file, a CSV row ("file.csv:12") or an id
  reason: str


def subject_split(subject_ids, *, seed: int, fractions=(0.7, 0.15, 0.15)) -> dict:
  """Seeded subject-wise split: subject id -> split name; every subject's recordings stay together.

  Subjects are ordered by a hash of (seed, id) — stable under adding or removing other subjects — and
  cut at the cumulative fractions, so the split of a subject never depends on file order.
  """
  if len(fractions) != len(SPLITS) or abs(sum(fractions) - 1.0) > 1e-6:
    raise ValueError(f"fractions must be three numbers summing to 1, got {fractions}")
  unique = sorted(set(map(str, subject_ids)))
  key = lambda s: hashlib.sha256(f"{seed}:{s}".encode()).hexdigest()
  ordered = sorted(unique, key=key)
  edges = np.round(np.cumsum(fractions) * len(ordered)).astype(int)
  out = {}
  for i, subject in enumerate(ordered):
    out[subject] = SPLITS[int(np.searchsorted(edges, i, side="right"))]
  return out


def evenly_spaced(specs: list, limit) -> list:
  """`limit` specs evenly spaced over the (sorted) list — every class keeps its share — or all."""
  if limit in (None, "", 0, "0"):
    return specs
  limit = int(limit)
  if limit < 0:
    raise ValueError(f"limit must be >= 0, got {limit}")
  if limit >= len(specs):
    return specs
  keep = np.unique(np.linspace(0, len(specs) - 1, limit).round().astype(int))
  return [specs[i] for i in keep]


def opera_split_lists(opera_split_dir, files, *, subfolder: str, url: str, read, known, what: str,
                      known_where: str) -> dict:
  """{id: split} from OPERA's per-split id lists (CoughVID, UK COVID): `files` = ((file name, split), ...).

  `opera_split_dir` is the lists' folder or an OPERA checkout (then its `subfolder`); `read(path)` returns
  one list's ids. Raises ValueError without a folder, FileNotFoundError naming a missing list, and
  ValueError naming a list that holds an id not in `known` (described by `what` / `known_where`) or an id
  that another list holds too.
  """
  names = [name for name, _ in files]
  if not opera_split_dir:
    raise ValueError(f"split='opera' needs --option=opera_split_dir=PATH, a folder with {', '.join(names)} "
                     f"from {url}")
  folder = os.fspath(opera_split_dir)
  nested = os.path.join(folder, subfolder)
  if not os.path.isfile(os.path.join(folder, names[0])) and os.path.isdir(nested):
    folder = nested
  known = set(known)
  assign, source = {}, {}
  for name, split in files:
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{path}: OPERA split list not found (download it from {url})")
    listed = read(path)
    unknown = sorted(set(listed) - known)
    if unknown:
      raise ValueError(f"{path}: {len(unknown)} {what}(s) not in {known_where}, e.g. {unknown[:3]}")
    for example_id in listed:
      if example_id in assign:
        raise ValueError(f"{path}: {what} {example_id} is also listed in {source[example_id]}")
      assign[example_id], source[example_id] = split, path
  return assign


def option_bool(value) -> bool:
  """An adapter option given as a bool or as text ("true", "1", "yes"; prepare passes strings)."""
  return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "y")


def option_fractions(value) -> tuple:
  """(train, valid, test) fractions given as a tuple or as text ("0.7,0.1,0.2" or "0.7/0.1/0.2")."""
  return tuple(float(x) for x in re.split(r"[,/ ]+", value.strip())) if isinstance(value, str) else tuple(value)
