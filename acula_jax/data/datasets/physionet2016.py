r"""PhysioNet/CinC Challenge 2016 heart sounds (normal vs abnormal), in the official layout.

Source: https://physionet.org/content/challenge-2016/ (Liu et al., "An open access database for the
evaluation of heart sound algorithms", Physiol. Meas. 37(12), 2016; Open Data Commons Attribution 1.0).

Layout read (the published one; the .hea headers are not needed):
  DATA_DIR/training-{a..f}/{id}.wav          2 kHz mono PCG recordings, 5-122 s
  DATA_DIR/training-X/REFERENCE.csv          id,-1|1                 (-1 normal, 1 abnormal)
  DATA_DIR/training-X/REFERENCE-SQI.csv      id,-1|1,0|1             (label again, signal quality)

Labels (LABEL_MAPS): `outcome` -1 -> "normal", 1 -> "abnormal" (the key CirCor's normal/abnormal
label has, so the heart report template states it); `quality` 0 -> "poor", 1 -> "good" (from
REFERENCE-SQI.csv; left out when that file or its row is missing). Metadata: `dataset` and
`schema` "heart" (they select the heart report template, which states the outcome and nothing about
the database or files) and `database` (the subset letter); prepare adds duration and original rate.
There are no patient ids: subject_id = record id. A row whose audio is missing, a wav without a
row, an unknown label code or an SQI row that contradicts REFERENCE.csv is skipped and counted.

Split protocols (option `split=`):
  random (default)        seeded split by record, stratified by (database, label): 70/15/15.
                          Caveat: the database letter alone predicts the label (AUROC ~0.73 with
                          classic features), and recordings of one subject can repeat inside a
                          database, so they may fall on both sides. Never report this split alone.
  within_database:X       only database X, seeded 70/15/15 stratified by label (same caveat on
                          repeated subjects, but no database shortcut).
  leave_database_out:X    database X is the test set; valid = a seeded 15% of the other databases
                          (stratified by database and label), train = the rest.
Other options: `databases=abf` (or "a,b,f") lists only those subsets; `limit=N` keeps N records
evenly spaced over the sorted ids (every database and both labels stay represented; splits are
assigned before the limit, so a record's split never depends on it) - for smoke tests.
"""
import csv
import os

from acula_jax.data.datasets import common
from acula_jax.errors import DataError

NAME = "physionet2016"
MODALITY = "heart"
SCHEMA = "heart"  # acula_jax.text.report_templates
DATABASES = tuple("abcdef")
LABEL_MAPS = {
    "outcome": {"-1": "normal", "1": "abnormal"},
    "quality": {"0": "poor", "1": "good"},
}
SPLIT_PROTOCOLS = ("random", "within_database", "leave_database_out")
FRACTIONS = (0.7, 0.15, 0.15)
VALID_FRACTION = 0.15  # of the remaining databases, under leave_database_out
REFERENCE = "REFERENCE.csv"
REFERENCE_SQI = "REFERENCE-SQI.csv"


def list_examples(data_dir, *, split="random", databases=None, limit=None, seed=0):
  """Example specs of the PhysioNet 2016 copy in `data_dir` (see the module docstring for options)."""
  data_dir = os.fspath(data_dir)
  protocol, held = parse_split(split)
  letters = _databases(data_dir, databases)
  if protocol == "within_database":
    if held not in letters:
      raise DataError(data_dir, f"split {split!r}: database {held!r} is not among {letters}")
    letters = [held]
  if protocol == "leave_database_out" and (held not in letters or len(letters) < 2):
    raise DataError(data_dir, f"split {split!r} needs database {held!r} and at least one other; "
                              f"listed: {letters}")
  specs, skipped = [], []
  for letter in letters:
    more_specs, more_skipped = _list_database(data_dir, letter)
    specs += more_specs
    skipped += more_skipped
  _assign_splits(specs, protocol, held, int(seed))
  specs.sort(key=lambda s: s.id)
  return common.evenly_spaced(specs, limit), skipped


def parse_split(split: str):
  """'random' -> ('random', None); 'leave_database_out:e' -> ('leave_database_out', 'e')."""
  protocol, _, letter = str(split).partition(":")
  if protocol not in SPLIT_PROTOCOLS or (protocol == "random") != (not letter) or (
      letter and letter not in DATABASES):
    raise ValueError(f"split must be random, within_database:X or leave_database_out:X with X in "
                     f"{''.join(DATABASES)}; got {split!r}")
  return protocol, letter or None


def _databases(data_dir, databases) -> list[str]:
  """The database letters to list: those asked for, else every training-X folder present."""
  present = [x for x in DATABASES if os.path.isdir(os.path.join(data_dir, f"training-{x}"))]
  if databases in (None, ""):
    if not present:
      raise DataError(data_dir, "no training-{a..f} folders here; point --data_dir at the PhysioNet "
                                "2016 root (the folder that holds training-a, training-b, ...)")
    return present
  wanted = [x for x in (databases if isinstance(databases, (list, tuple)) else str(databases))
            if x not in ", "]
  missing = [x for x in wanted if x not in present]
  if missing:
    raise DataError(data_dir, f"databases {missing} requested but not found (present: {present})")
  return sorted(set(wanted))


def _read_rows(path, min_cells):
  """[(line number, cells)] of a headerless CSV; DataError naming the file and line when malformed."""
  rows = []
  try:
    with open(path, encoding="utf-8-sig", newline="") as f:
      for line, cells in enumerate(csv.reader(f), start=1):
        cells = [c.strip() for c in cells]
        if not any(cells):
          continue
        if len(cells) < min_cells:
          raise DataError(path, f"line {line}: expected at least {min_cells} cells, got {cells}")
        rows.append((line, cells))
  except (csv.Error, UnicodeDecodeError) as e:
    raise DataError(path, f"unparseable CSV ({e})") from e
  return rows


def _read_quality(folder):
  """{id: (label code, quality code)} from REFERENCE-SQI.csv, or {} when the file is absent."""
  path = os.path.join(folder, REFERENCE_SQI)
  if not os.path.isfile(path):
    return {}
  return {cells[0]: (cells[1], cells[2]) for _, cells in _read_rows(path, 3)}


def _list_database(data_dir, letter):
  """Specs and skipped rows of one training-X folder."""
  folder = os.path.join(data_dir, f"training-{letter}")
  reference = os.path.join(folder, REFERENCE)
  if not os.path.isfile(reference):
    raise DataError(reference, "missing (every training-X folder of the official layout has one)")
  quality = _read_quality(folder)
  wavs = {name[:-4] for name in os.listdir(folder) if name.endswith(".wav")}
  specs, skipped, seen = [], [], {}
  for line, (record, code, *_) in _read_rows(reference, 2):
    where = f"{reference}:{line}"
    if record in seen:
      raise DataError(reference, f"line {line}: duplicate record {record!r} (first on line {seen[record]})")
    seen[record] = line
    if code not in LABEL_MAPS["outcome"]:
      skipped.append(common.Skipped(where, f"unknown label {code!r} for {record} (expected -1 or 1)"))
      continue
    if record not in wavs:
      skipped.append(common.Skipped(where, f"audio file not found: training-{letter}/{record}.wav"))
      continue
    labels = {"outcome": LABEL_MAPS["outcome"][code]}
    if record in quality:
      sqi_code, q = quality[record]
      if sqi_code != code or q not in LABEL_MAPS["quality"]:
        skipped.append(common.Skipped(where, f"{REFERENCE_SQI} row of {record} ({sqi_code},{q}) "
                                             f"contradicts {REFERENCE} ({code}) or has no 0/1 quality"))
        continue
      labels["quality"] = LABEL_MAPS["quality"][q]
    specs.append(common.ExampleSpec(
        id=record, path=f"training-{letter}/{record}.wav", subject_id=record, split="",
        labels=labels, metadata={"dataset": NAME, "schema": SCHEMA, "database": letter}))
  for record in sorted(wavs - set(seen)):
    skipped.append(common.Skipped(os.path.join(folder, f"{record}.wav"), f"no row in {REFERENCE}"))
  return specs, skipped


def stratified_split(specs, strata, *, seed, fractions):
  """Sets each spec's split by `common.subject_split` run separately inside every stratum."""
  groups = {}
  for spec, stratum in zip(specs, strata):
    groups.setdefault(stratum, []).append(spec)
  for group in groups.values():
    assignment = common.subject_split([s.subject_id for s in group], seed=seed, fractions=fractions)
    for spec in group:
      spec.split = assignment[spec.subject_id]


def _assign_splits(specs, protocol, held, seed):
  if protocol == "leave_database_out":
    rest = [s for s in specs if s.metadata["database"] != held]
    for spec in specs:
      if spec.metadata["database"] == held:
        spec.split = "test"
    stratified_split(rest, [(s.metadata["database"], s.labels["outcome"]) for s in rest], seed=seed,
                     fractions=(1 - VALID_FRACTION, VALID_FRACTION, 0.0))
  else:
    stratified_split(specs, [(s.metadata["database"], s.labels["outcome"]) for s in specs],
                     seed=seed, fractions=FRACTIONS)
