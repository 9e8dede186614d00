r"""Your own recordings, described by one table (CSV, or parquet when pyarrow or pandas is installed).

  python -m acula_jax.data.prepare --dataset=table --data_dir=/my/data --output=/my/records \
      --option=table=labels.csv --option=label_columns=diagnosis,murmur

The table (option `table=`, relative to --data_dir or absolute; default `table.csv`) has one row per
recording, with columns:
  path           required: the audio file, relative to --data_dir (or absolute)
  subject_id     required: who was recorded; an empty cell means unknown (the row's id stands in).
                 Splits keep each subject's recordings together.
  split          optional: train / valid / test (or any [A-Za-z0-9_]+ name) for every row; without
                 this column a seeded subject-wise 70/15/15 split is made (`common.subject_split`,
                 option `seed`), stratified by the first label column. A subject in two given
                 splits is an error unless `allow_subject_overlap=true`.
  id             optional: the example id (unique); default the path without its extension, plus
                 "@start-end" when segments are given.
  start_s, end_s optional: a segment of the file, in seconds (per-cycle datasets).
  label columns  named by the option `label_columns=a,b`; values are taken as written (LABEL_MAPS is
                 empty: map codes to names in the table). A row with an empty label is skipped.
  anything else  metadata, for the reports (e.g. age, sex, location, device).

Bad tables raise a DataError naming the file and row: empty file, missing required or label columns,
duplicate column names, rows with too many or too few cells, unparseable CSV, empty paths, duplicate
ids, bad split names or segment bounds. Rows whose audio file is missing are skipped and counted.
"""
import csv
import math
import os
import re

from acula_jax.data.datasets import common
from acula_jax.errors import DataError

NAME = "table"
MODALITY = "mixed"
LABEL_MAPS = {}  # Labels are taken as written in the user's table.
REQUIRED_COLUMNS = ("path", "subject_id")
SPECIAL_COLUMNS = ("id", "path", "subject_id", "split", "start_s", "end_s")
FRACTIONS = (0.7, 0.15, 0.15)
_SPLIT_RE = re.compile(r"^[A-Za-z0-9_]+$")  # split names become file names (see records.py)


def list_examples(data_dir, *, table="table.csv", label_columns="", seed=0, allow_subject_overlap=False):
  """Example specs of the rows of `table` (see the module docstring)."""
  data_dir = os.fspath(data_dir)
  path = table if os.path.isabs(table) else os.path.join(data_dir, table)
  header, rows = read_table(path)
  labels = _names(label_columns)
  missing = [c for c in (*REQUIRED_COLUMNS, *labels) if c not in header]
  if missing:
    raise DataError(path, f"missing column(s) {missing} (required: {list(REQUIRED_COLUMNS)}, labels from "
                          f"label_columns={','.join(labels)}); columns: {header}")
  metadata_columns = [c for c in header if c not in SPECIAL_COLUMNS and c not in labels]
  specs, skipped, first = [], [], {}
  for where, row in rows:
    spec, reason = _spec(row, where, path, data_dir, labels, metadata_columns, "split" in header)
    if reason:
      skipped.append(common.Skipped(f"{path}:{where}", reason))
      continue
    if spec.id in first:
      raise DataError(path, f"{where}: duplicate id {spec.id!r} (first at {first[spec.id]})")
    first[spec.id] = where
    specs.append(spec)
  if "split" in header:
    if not common.option_bool(allow_subject_overlap):
      _check_subjects(specs, path)
  else:
    _stratified_subject_split(specs, labels[:1], int(seed))
  return specs, skipped


def _stratified_subject_split(specs, stratify_by, seed):
  """Seeded subject-wise 70/15/15 split, made separately within each value of the first label column
  (a subject's first recording decides its stratum), so that every split sees every class."""
  key = lambda spec: spec.subject_id or spec.id
  strata = {}
  for spec in specs:
    stratum = str(spec.labels.get(stratify_by[0])) if stratify_by else ""
    strata.setdefault(key(spec), stratum)
  assignment = {}
  for stratum in sorted(set(strata.values())):
    members = [subject for subject, s in strata.items() if s == stratum]
    assignment.update(common.subject_split(members, seed=seed, fractions=FRACTIONS))
  for spec in specs:
    spec.split = assignment[key(spec)]


def _names(value) -> list[str]:
  if isinstance(value, (list, tuple)):
    return [str(v).strip() for v in value if str(v).strip()]
  return [v.strip() for v in str(value or "").split(",") if v.strip()]


def _text(value) -> str:
  """A cell as text; None and NaN (parquet) are empty."""
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return ""
  return str(value).strip()


def _plain(value):
  """A cell as a JSON-friendly value: str/int/float/bool kept, NaN -> None, anything else as text."""
  if isinstance(value, float) and math.isnan(value):
    return None
  if value is None or isinstance(value, (str, int, float, bool)):
    return value.strip() if isinstance(value, str) else value
  return str(value)


def _spec(row, where, path, data_dir, labels, metadata_columns, has_split):
  """(ExampleSpec, None) for a usable row, (None, reason) for one to skip; DataError for a bad one."""
  audio_path = _text(row["path"])
  if not audio_path:
    raise DataError(path, f"{where}: empty path")
  start, end = _segment(row, where, path)
  example_id = _text(row.get("id"))
  if "id" in row and not example_id:
    raise DataError(path, f"{where}: empty id")
  if not example_id:
    example_id = os.path.splitext(audio_path.replace(os.sep, "/"))[0]
    if start or end is not None:
      example_id += f"@{start:g}-{'' if end is None else f'{end:g}'}"
  split = _text(row.get("split"))
  if has_split and not _SPLIT_RE.match(split):
    raise DataError(path, f"{where}: split {split!r} must be a name like train, valid or test")
  empty = [c for c in labels if _text(row[c]) == ""]
  if empty:
    return None, f"empty label column(s) {empty} for {audio_path}"
  if not os.path.isfile(os.path.join(data_dir, audio_path)):
    return None, f"audio file not found: {audio_path}"
  return common.ExampleSpec(
      id=example_id, path=audio_path, subject_id=_text(row["subject_id"]), split=split,
      labels={c: _plain(row[c]) for c in labels}, metadata={c: _plain(row[c]) for c in metadata_columns},
      start_s=start, end_s=end), None


def _segment(row, where, path):
  """(start_s, end_s or None) from the optional columns; DataError when not numbers or reversed."""
  try:
    start = float(_text(row.get("start_s")) or 0.0)
    end = _text(row.get("end_s"))
    end = float(end) if end else None
  except ValueError as e:
    raise DataError(path, f"{where}: start_s/end_s must be numbers ({e})") from e
  if start < 0 or (end is not None and end <= start):
    raise DataError(path, f"{where}: segment [{start}, {end}) s is empty or negative")
  return start, end


def _check_subjects(specs, path):
  """DataError when one subject's recordings sit in two given splits (that leaks the subject)."""
  split_of = {}
  for spec in specs:
    if not spec.subject_id:
      continue
    other = split_of.setdefault(spec.subject_id, (spec.split, spec.id))
    if other[0] != spec.split:
      raise DataError(path, f"subject {spec.subject_id!r} is in split {other[0]!r} ({other[1]}) and "
                            f"{spec.split!r} ({spec.id}); pass allow_subject_overlap=true if intended")


# ----------------------------------------------------------------------------------------------------
# Reading the table.
# ----------------------------------------------------------------------------------------------------

def read_table(path):
  """(header, [(where, row dict)]) of a .csv or .parquet table; DataError naming file and row."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise DataError(path, "table not found (pass --option=table=FILE, relative to --data_dir)")
  if path.lower().endswith((".parquet", ".pq")):
    header, rows = _read_parquet(path)
  else:
    header, rows = _read_csv(path)
  if not rows:
    raise DataError(path, "the table has a header but no rows")
  return header, rows


def _check_header(path, header):
  if not header:
    raise DataError(path, "empty file (no header row)")
  blank = [i for i, h in enumerate(header) if not h]
  if blank:
    raise DataError(path, f"header has unnamed column(s) at position(s) {blank}: {header}")
  duplicates = sorted({h for h in header if header.count(h) > 1})
  if duplicates:
    raise DataError(path, f"header repeats column(s) {duplicates}")


def _read_csv(path):
  try:
    with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: a spreadsheet's BOM is dropped.
      reader = csv.reader(f)
      header = [h.strip() for h in next(reader, [])]
      _check_header(path, header)
      rows = []
      for n, cells in enumerate(reader, start=1):
        where = f"row {n} (line {reader.line_num})"
        if not any(c.strip() for c in cells):
          continue  # Blank lines, e.g. a trailing one.
        if len(cells) != len(header):
          raise DataError(path, f"{where}: {len(cells)} cells, header has {len(header)} columns")
        rows.append((where, dict(zip(header, cells))))
  except (csv.Error, UnicodeDecodeError) as e:
    raise DataError(path, f"unparseable CSV ({type(e).__name__}: {e})") from e
  return header, rows


def _read_parquet(path):
  """Rows of a parquet file via pyarrow (or pandas); ImportError that says so when neither exists."""
  try:
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
    try:
      data = pq.read_table(path)
    except Exception as e:  # pyarrow raises ArrowInvalid and others for a damaged file.
      raise DataError(path, f"unreadable parquet file ({e})") from e
    header, records = list(data.column_names), data.to_pylist()
  except ImportError:
    try:
      import pandas  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise ImportError(f"{path}: reading parquet tables needs pyarrow or pandas (pip install "
                        "pyarrow), or save the table as CSV") from None
    try:
      frame = pandas.read_parquet(path)
    except ImportError:
      raise
    except Exception as e:
      raise DataError(path, f"unreadable parquet file ({e})") from e
    header, records = [str(c) for c in frame.columns], frame.to_dict("records")
  _check_header(path, header)
  return header, [(f"row {n}", dict(zip(header, r.values()))) for n, r in enumerate(records, start=1)]
